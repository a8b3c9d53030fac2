"""The SageMaker rollout against moto as a real HTTP server on loopback, and its helpers.

moto has no update_endpoint, so the blue/green update and the rollback are checked against
UpdateEndpointFake, which fakes only that call; every other call reaches the moto server.
moto's sagemaker-runtime invoke_endpoint runs no container: it answers a canned body (the
literal "body" unless a result is queued through moto's /moto-api), so these tests queue the
answers a container would give and check what our smoke test makes of them.
"""

from __future__ import annotations

import json
import tarfile

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from components.sagemaker import (
    SageMakerConfig,
    SageMakerError,
    check_predictions,
    current_config,
    ensure_endpoint_config,
    ensure_model,
    package_model_dir,
    roll_out,
    sagemaker_name,
    wait_in_service,
)

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sentinova-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sentinova-serve:test"
TWEETS = ["love it", "hate it", "it is a plane"]
GOOD_ANSWER = json.dumps({"predictions": [
    {"label": "positive", "probs": [0.1, 0.2, 0.7]},
    {"label": "negative", "probs": [0.8, 0.15, 0.05]},
    {"label": "neutral", "probs": [0.2, 0.6, 0.2]},
]})


@pytest.fixture(scope="module")
def moto_url():
    """A moto server on a free loopback port, with fake credentials and no metadata lookups."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                           "AWS_EC2_METADATA_DISABLED": "true"}.items():
            patch.setenv(key, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
        server.stop()


@pytest.fixture
def aws(moto_url):
    """Clients on a freshly reset moto server: s3, sagemaker and sagemaker-runtime."""
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()
    return {name: boto3.client(name, region_name=REGION, endpoint_url=moto_url)
            for name in ("s3", "sagemaker", "sagemaker-runtime")}


def queue_runtime_answers(moto_url: str, *bodies: str) -> None:
    """Queue the bodies that moto's invoke_endpoint returns to the next new requests."""
    results = [{"Body": body, "ContentType": "application/json"} for body in bodies]
    httpx.post(f"{moto_url}/moto-api/static/sagemaker/endpoint-results",
               json={"region": REGION, "results": results}).raise_for_status()


class UpdateEndpointFake:
    """A moto-backed SageMaker client whose update_endpoint alone is faked (moto lacks it).

    The fake records each call and leaves moto in the state a finished blue/green update
    leaves: the endpoint InService on the new config.
    """

    def __init__(self, client) -> None:
        self._client = client
        self.updates: list[dict] = []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def update_endpoint(self, **request):
        self.updates.append(request)
        self._client.delete_endpoint(EndpointName=request["EndpointName"])
        self._client.create_endpoint(EndpointName=request["EndpointName"],
                                     EndpointConfigName=request["EndpointConfigName"])
        return {"EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/x"}


def config(**overrides) -> SageMakerConfig:
    values = {"region": REGION, "role_arn": ROLE, "image_uri": IMAGE,
              "instance_type": "ml.m5.large", "s3_bucket": "models", "poll_interval_s": 0.01,
              "wait_timeout_s": 5, "termination_wait_s": 60, **overrides}
    return SageMakerConfig(**values)


def make_config(aws, name: str) -> tuple[str, str]:
    """Upload a model.tar.gz and create its Model and EndpointConfig on moto; return both."""
    if "models" not in [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]]:
        aws["s3"].create_bucket(Bucket="models")
    aws["s3"].put_object(Bucket="models", Key=f"{name}/model.tar.gz", Body=b"tar")
    url = f"s3://models/{name}/model.tar.gz"
    ensure_model(aws["sagemaker"], name, IMAGE, url, ROLE, {"SENTINOVA_SERVE_MAX_WAIT_MS": "2"})
    ensure_endpoint_config(aws["sagemaker"], name, name, "ml.m5.large", 1)
    return name, url


def test_package_is_reproducible_and_holds_the_model_at_the_top(tmp_path):
    model_dir = tmp_path / "model"
    (model_dir / "artifacts" / "model_dir").mkdir(parents=True)
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    (model_dir / "artifacts" / "model_dir" / "sentinova.json").write_text('{"max_len": 64}')

    first = package_model_dir(model_dir, tmp_path / "a" / "model.tar.gz")
    second = package_model_dir(model_dir, tmp_path / "b" / "model.tar.gz")

    assert first.sha256 == second.sha256
    with tarfile.open(first.path) as archive:
        names = archive.getnames()
        assert {m.mtime for m in archive.getmembers()} == {0}
    assert "MLmodel" in names and "artifacts/model_dir/sentinova.json" in names


def test_sagemaker_names_keep_to_letters_digits_and_hyphens():
    assert sagemaker_name("sentinova_sentiment", "v3", "ab12") == "sentinova-sentiment-v3-ab12"
    assert len(sagemaker_name("x" * 80, "v1")) == 63


def test_check_predictions_accepts_the_contract_and_rejects_the_rest():
    assert [p["label"] for p in check_predictions(GOOD_ANSWER.encode(), 3)] == [
        "positive", "negative", "neutral"]
    bad = {
        b"body": "not JSON",
        b'{"predictions": []}': "expected 3",
        b'{"predictions": [{"label": "happy", "probs": [1, 0, 0]}]}': "no label",
        b'{"predictions": [{"label": "negative", "probs": [0.5, 0.6, 0]}]}': "distribution",
        b'{"predictions": [{"label": "neutral", "probs": [0.7, 0.2, 0.1]}]}': "most probable",
    }
    for body, reason in bad.items():
        count = 3 if reason in ("not JSON", "expected 3") else 1
        with pytest.raises(ValueError, match=reason):
            check_predictions(body, count)


def test_model_and_endpoint_config_are_created_once(aws):
    name, url = make_config(aws, "sentinova-v1-aaaa")

    assert ensure_model(aws["sagemaker"], name, IMAGE, url, ROLE, {}) is False
    assert ensure_endpoint_config(aws["sagemaker"], name, name, "ml.m5.large", 1) is False
    described = aws["sagemaker"].describe_endpoint_config(EndpointConfigName=name)
    variant = described["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"]) == (name, "ml.m5.large")
    container = aws["sagemaker"].describe_model(ModelName=name)["PrimaryContainer"]
    assert (container["Image"], container["ModelDataUrl"]) == (IMAGE, url)


def test_first_rollout_creates_the_endpoint_and_passes_the_smoke_test(aws, moto_url):
    name, url = make_config(aws, "sentinova-v1-aaaa")
    queue_runtime_answers(moto_url, GOOD_ANSWER)

    deployment = roll_out(aws["sagemaker"], aws["sagemaker-runtime"], "sentinova", name, name,
                          url, TWEETS, config())

    assert (deployment.action, deployment.status) == ("created", "InService")
    assert deployment.smoke.passed and deployment.smoke.labels == [
        "positive", "negative", "neutral"]
    assert current_config(aws["sagemaker"], "sentinova") == name


def test_a_new_endpoint_failing_its_smoke_test_is_deleted(aws):
    name, url = make_config(aws, "sentinova-v1-aaaa")

    with pytest.raises(SageMakerError, match="smoke test .* failed .*not JSON.*deleted"):
        roll_out(aws["sagemaker"], aws["sagemaker-runtime"], "sentinova", name, name, url,
                 TWEETS, config())
    assert current_config(aws["sagemaker"], "sentinova") is None


def test_an_existing_endpoint_is_updated_blue_green_to_the_new_config(aws, moto_url):
    old, old_url = make_config(aws, "sentinova-v1-aaaa")
    new, new_url = make_config(aws, "sentinova-v2-bbbb")
    queue_runtime_answers(moto_url, GOOD_ANSWER, GOOD_ANSWER)
    roll_out(aws["sagemaker"], aws["sagemaker-runtime"], "sentinova", old, old, old_url,
             TWEETS, config())
    sagemaker = UpdateEndpointFake(aws["sagemaker"])

    deployment = roll_out(sagemaker, aws["sagemaker-runtime"], "sentinova", new, new, new_url,
                          TWEETS, config(termination_wait_s=120))

    assert (deployment.action, deployment.previous_config_name) == ("updated", old)
    assert [u["EndpointConfigName"] for u in sagemaker.updates] == [new]
    policy = sagemaker.updates[0]["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TerminationWaitInSeconds"] == 120
    assert policy["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    assert current_config(aws["sagemaker"], "sentinova") == new


def test_a_failed_smoke_test_after_an_update_rolls_back_to_the_previous_config(aws, moto_url):
    old, old_url = make_config(aws, "sentinova-v1-aaaa")
    new, new_url = make_config(aws, "sentinova-v2-bbbb")
    # One good answer for the first rollout; the update's smoke test gets moto's static "body".
    queue_runtime_answers(moto_url, GOOD_ANSWER)
    roll_out(aws["sagemaker"], aws["sagemaker-runtime"], "sentinova", old, old, old_url,
             TWEETS, config())
    sagemaker = UpdateEndpointFake(aws["sagemaker"])

    with pytest.raises(SageMakerError, match=f"failed .*rolled back to {old}"):
        roll_out(sagemaker, aws["sagemaker-runtime"], "sentinova", new, new, new_url, TWEETS,
                 config())

    assert [u["EndpointConfigName"] for u in sagemaker.updates] == [new, old]
    assert current_config(aws["sagemaker"], "sentinova") == old


def test_rolling_out_the_config_already_served_changes_nothing(aws, moto_url):
    name, url = make_config(aws, "sentinova-v1-aaaa")
    queue_runtime_answers(moto_url, GOOD_ANSWER)
    roll_out(aws["sagemaker"], aws["sagemaker-runtime"], "sentinova", name, name, url, TWEETS,
             config())
    sagemaker = UpdateEndpointFake(aws["sagemaker"])

    again = roll_out(sagemaker, aws["sagemaker-runtime"], "sentinova", name, name, url, TWEETS,
                     config())

    assert again.action == "unchanged" and again.smoke.passed
    assert sagemaker.updates == []


class ScriptedEndpoint:
    """A describe_endpoint that walks through given statuses (SageMaker's transitions)."""

    def __init__(self, *states: tuple[str, str]) -> None:
        self.states = list(states)

    def describe_endpoint(self, EndpointName):
        status, config_name = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"EndpointStatus": status, "EndpointConfigName": config_name,
                "FailureReason": "image failed its /ping health check"}


def test_wait_in_service_follows_updating_to_in_service_and_reports_failures():
    sleeps = []
    walk = ScriptedEndpoint(("Updating", "v2"), ("Updating", "v2"), ("InService", "v2"))
    assert wait_in_service(walk, "e", "v2", 60, 5, sleeps.append) == "InService"
    assert sleeps == [5, 5]

    with pytest.raises(SageMakerError, match="Failed: image failed its /ping"):
        wait_in_service(ScriptedEndpoint(("Creating", "v2"), ("Failed", "v2")), "e", "v2", 60, 0,
                        lambda s: None)
    with pytest.raises(SageMakerError, match="InService on v1, not v2"):
        wait_in_service(ScriptedEndpoint(("InService", "v1")), "e", "v2", 60, 0, lambda s: None)
    with pytest.raises(SageMakerError, match="still Updating after 0 s"):
        wait_in_service(ScriptedEndpoint(("Updating", "v2")), "e", "v2", 0, 0, lambda s: None)


def test_missing_sagemaker_settings_are_named():
    missing = SageMakerConfig(region=None, role_arn=ROLE, image_uri=None,
                              instance_type="ml.m5.large").missing()
    assert missing == ["SENTINOVA_SAGEMAKER_REGION", "SENTINOVA_SAGEMAKER_IMAGE_URI",
                       "SENTINOVA_SAGEMAKER_S3_BUCKET"]
