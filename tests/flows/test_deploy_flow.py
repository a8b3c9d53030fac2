"""The deploy flow on a real registered model: local serving, and SageMaker against moto.

moto runs as a real HTTP server on loopback. Its sagemaker-runtime runs no container and
answers invoke_endpoint with a canned body, so the SageMaker smoke test here is fed the
answer our own server gives for the smoke tweets; the container itself is checked by the
local tests, which run `sentinova serve` for real.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import boto3
import httpx
import mlflow
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from components.deploy import DeployError, pid_file, running_server, stop_local_server
from components.promote import promote
from components.sagemaker import SMOKE_TWEETS, SageMakerError
from components.serve import prediction_records
from sentinova.settings import configure_mlflow, get_settings
from tests.conftest import VALIDATION_FILE, read_jsonl
from tests.components.test_serve import free_port

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sentinova-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sentinova-serve:test"


def build_tiny_model(model_dir: Path) -> Path:
    """Save a small real Sentinova model: its own WordPiece vocabulary and an untrained BiLSTM."""
    import keras

    from components.model import SentimentClassifier
    from components.normalise import normalise_tweet
    from components.tokenizer import train_tokenizer
    from components.train import TrainConfig, build_bilstm

    keras.utils.set_random_seed(7)
    tweets = [row["rawContent"] for row in read_jsonl(VALIDATION_FILE)[:400]]
    tokenizer = train_tokenizer([normalise_tweet(t) for t in tweets], vocab_size=400)
    config = TrainConfig(lstm_units=8, embedding_dim=16, checkpoint="none")
    model = build_bilstm(tokenizer.get_vocab_size(), None, config)
    return SentimentClassifier(model, tokenizer, max_len=32).save(model_dir)


def register_model_dir(model_dir: Path, metrics: dict[str, float] | None = None,
                       tags: dict[str, str] | None = None) -> int:
    """Register a saved model folder as a new version of the settings' model; return it."""
    from components.model import SentinovaPyfunc

    with mlflow.start_run(tags=tags):
        if metrics:
            mlflow.log_metrics(metrics)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=SentinovaPyfunc(),
            artifacts={"model_dir": str(model_dir)}, pip_requirements=["tensorflow-cpu"],
            registered_model_name=get_settings().model_name)
    return int(info.registered_model_version)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, prefect_harness, shared_data):
    """A SENTINOVA_HOME whose registry holds two versions of a tiny real model, v1 champion."""

    work = tmp_path_factory.mktemp("deploy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SENTINOVA_HOME", str(work / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        configure_mlflow()
        model_dir = build_tiny_model(work / "model")
        versions = [register_model_dir(model_dir) for _ in range(2)]
        promote(versions[0], who="test", why="first model")
        yield {"versions": versions, "work": work}
    get_settings.cache_clear()


def model_probs(uri: str, tweets: list[str]) -> np.ndarray:
    from components.model import load_classifier

    return load_classifier(uri).predict_proba(tweets)


def test_local_target_serves_the_champion_whose_answers_equal_predict_proba(registered):
    from flows.deploy import deploy_flow

    port = free_port()
    tweets = ["@united lost my bag AGAIN &amp; no reply", "what a lovely flight :)", "ok"]
    try:
        report = deploy_flow(target="local", port=port)

        assert report.model.version == registered["versions"][0]
        assert report.model.uri.endswith(f"/{registered['versions'][0]}")
        server = running_server(port)
        assert server is not None and server.pid == report.local.pid
        assert pid_file(port).parent == get_settings().home.resolve() / "serve"
        assert httpx.get(f"{report.local.url}/ping", timeout=5).status_code == 200

        answer = httpx.post(f"{report.local.url}/invocations", json={"inputs": tweets},
                            timeout=30)
        csv_answer = httpx.post(f"{report.local.url}/invocations", timeout=30,
                                content="\n".join(tweets), headers={"content-type": "text/csv"})
    finally:
        stop_local_server(port)

    expected = model_probs(report.model.uri, tweets)
    served = np.array([p["probs"] for p in answer.json()["predictions"]], dtype=np.float32)
    assert np.array_equal(served, expected)
    assert csv_answer.json() == answer.json()
    assert running_server(port) is None


@pytest.mark.slow
def test_local_redeploy_replaces_the_running_server_with_the_named_version(registered):
    from flows.deploy import deploy_flow

    port = free_port()
    try:
        first = deploy_flow(target="local", port=port)
        second = deploy_flow(target="local", port=port, version=registered["versions"][1])

        assert second.model.version == registered["versions"][1]
        assert second.local.pid != first.local.pid
        assert running_server(port).model_uri == second.model.uri
        assert httpx.get(f"{second.local.url}/ping", timeout=5).status_code == 200
    finally:
        stop_local_server(port)


def test_local_target_refuses_a_missing_version_with_a_clear_error(registered):
    from flows.deploy import deploy_flow

    with pytest.raises(DeployError, match="has no version 99"):
        deploy_flow(target="local", port=free_port(), version=99)


@pytest.fixture(scope="module")
def moto_aws(registered):
    """moto on a loopback port, an AwsCredentials block pointing at it, and a bucket."""
    from prefect_aws import AwsCredentials

    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_EC2_METADATA_DISABLED": "true",
                           "AWS_DEFAULT_REGION": REGION}.items():
            patch.setenv(key, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing",
                       region_name=REGION, aws_client_parameters={"endpoint_url": url},
                       ).save("moto-aws", overwrite=True)
        clients = {name: boto3.client(name, region_name=REGION, endpoint_url=url)
                   for name in ("s3", "sagemaker")}
        clients["s3"].create_bucket(Bucket="sentinova-models")
        yield {"url": url, **clients}
        server.stop()


def sagemaker_parameters(**overrides) -> dict:
    return {"target": "sagemaker", "region": REGION, "role_arn": ROLE, "image_uri": IMAGE,
            "instance_type": "ml.m5.large", "s3_bucket": "sentinova-models",
            "aws_credentials_block": "moto-aws", "endpoint_name": "sentinova-test", **overrides}


def test_sagemaker_target_packages_uploads_creates_and_smoke_tests(registered, moto_aws,
                                                                   tmp_path):
    from flows.deploy import deploy_flow

    version = registered["versions"][0]
    served = prediction_records(model_probs(f"models:/{get_settings().model_name}/{version}",
                                            SMOKE_TWEETS))
    httpx.post(f"{moto_aws['url']}/moto-api/static/sagemaker/endpoint-results", json={
        "region": REGION, "results": [{"Body": json.dumps({"predictions": served}),
                                       "ContentType": "application/json"}]}).raise_for_status()

    report = deploy_flow(**sagemaker_parameters())

    deployment = report.sagemaker
    assert (deployment.action, deployment.status) == ("created", "InService")
    assert deployment.smoke.passed
    assert deployment.smoke.labels == [p["label"] for p in served]
    assert deployment.model_data_url.startswith(
        f"s3://sentinova-models/sentinova/models/{get_settings().model_name}/v{version}-")

    key = deployment.model_data_url.removeprefix("s3://sentinova-models/")
    tarball = tmp_path / "model.tar.gz"
    moto_aws["s3"].download_file("sentinova-models", key, str(tarball))
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert "MLmodel" in names
    assert any(name.endswith("/sentinova.json") for name in names)

    container = moto_aws["sagemaker"].describe_model(ModelName=deployment.model_name)
    assert container["PrimaryContainer"]["Image"] == IMAGE
    assert container["PrimaryContainer"]["ModelDataUrl"] == deployment.model_data_url
    assert container["ExecutionRoleArn"] == ROLE
    endpoint = moto_aws["sagemaker"].describe_endpoint(EndpointName="sentinova-test")
    assert endpoint["EndpointConfigName"] == deployment.endpoint_config_name

    again = deploy_flow(**sagemaker_parameters())
    assert again.sagemaker.action == "unchanged"
    assert again.sagemaker.model_data_url == deployment.model_data_url


def test_sagemaker_target_deletes_a_new_endpoint_whose_smoke_test_fails(registered, moto_aws):
    from flows.deploy import deploy_flow

    # Nothing queued: moto answers the literal "body", which is no prediction at all.
    with pytest.raises(SageMakerError, match="smoke test .* failed .* deleted the new endpoint"):
        deploy_flow(**sagemaker_parameters(endpoint_name="sentinova-broken"))
    with pytest.raises(Exception, match="Could not find endpoint"):
        moto_aws["sagemaker"].describe_endpoint(EndpointName="sentinova-broken")


def test_sagemaker_target_names_the_missing_settings(registered, monkeypatch):
    from flows.deploy import deploy_flow

    for key in ("SENTINOVA_SAGEMAKER_IMAGE_URI", "SENTINOVA_SAGEMAKER_ROLE_ARN"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SageMakerError, match="SENTINOVA_SAGEMAKER_ROLE_ARN, "
                                             "SENTINOVA_SAGEMAKER_IMAGE_URI"):
        deploy_flow(**sagemaker_parameters(role_arn=None, image_uri=None))


@pytest.mark.slow
def test_serving_image_entry_serves_an_unpacked_model_tar_gz_like_sagemaker(registered,
                                                                           tmp_path):
    """infra/serve/serve run as SageMaker runs the image, on the archive the flow uploads."""
    import os
    import subprocess
    import sys

    from components.deploy import wait_for_ping
    from components.sagemaker import package_model
    from tests.conftest import REPO

    uri = f"models:/{get_settings().model_name}/{registered['versions'][0]}"
    packaged = package_model(uri, tmp_path / "package")
    model_dir = tmp_path / "opt" / "ml" / "model"
    model_dir.mkdir(parents=True)
    with tarfile.open(packaged.path) as archive:
        archive.extractall(model_dir, filter="data")

    port = free_port()
    env = {**os.environ, "SENTINOVA_MODEL_DIR": str(model_dir),
           "SAGEMAKER_BIND_TO_PORT": str(port), "SENTINOVA_SERVE_HOST": "127.0.0.1",
           "PYTHONPATH": str(REPO),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SENTINOVA_HOME": str(tmp_path / "container-home")}
    process = subprocess.Popen([str(REPO / "infra" / "serve" / "serve"), "serve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_ping(f"http://127.0.0.1:{port}", 180, process)
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", timeout=30,
                            content="\n".join(SMOKE_TWEETS), headers={"content-type": "text/csv"})
    finally:
        process.terminate()
        process.wait(timeout=30)

    served = np.array([p["probs"] for p in answer.json()["predictions"]], dtype=np.float32)
    assert np.array_equal(served, model_probs(uri, SMOKE_TWEETS))
