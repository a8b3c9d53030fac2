"""SageMaker target: model.tar.gz to S3, Model and EndpointConfig, rollout, smoke test."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import math
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentinova.settings import LABELS

log = logging.getLogger(__name__)

VARIANT = "AllTraffic"
SMOKE_TWEETS = [
    "I love this airline, the crew were wonderful!",
    "Worst delay ever and nobody at the gate could tell us anything.",
    "Flight 123 departs at 6pm from gate B4.",
]
# Statuses in which SageMaker is still working on the endpoint.
TRANSITIONAL = {"Creating", "Updating", "SystemUpdating", "RollingBack"}


class SageMakerError(RuntimeError):
    """A SageMaker deployment step that failed, with the reason in one line."""


class SageMakerConfig(BaseSettings):
    """Where and how to deploy on SageMaker (SENTINOVA_SAGEMAKER_*; flow parameters override)."""

    model_config = SettingsConfigDict(env_prefix="SENTINOVA_SAGEMAKER_", extra="ignore")

    region: str | None = None
    role_arn: str | None = None
    image_uri: str | None = None
    instance_type: str | None = None
    instance_count: int = Field(default=1, ge=1)
    endpoint_name: str = "sentinova-sentiment"
    s3_bucket: str | None = None
    s3_prefix: str = "sentinova/models"
    aws_credentials_block: str | None = None
    s3_bucket_block: str | None = None
    termination_wait_s: int = Field(default=300, ge=0, le=3600)
    wait_timeout_s: float = Field(default=1800.0, gt=0)
    poll_interval_s: float = Field(default=30.0, gt=0)
    # Passed to the container as SENTINOVA_SERVE_* so the endpoint batches like local serving.
    serve_environment: dict[str, str] = Field(default_factory=dict)

    def missing(self) -> list[str]:
        """Return the settings a SageMaker deployment needs that are not set."""
        needed = {"region": self.region, "role_arn": self.role_arn,
                  "image_uri": self.image_uri, "instance_type": self.instance_type}
        if self.s3_bucket_block is None:
            needed["s3_bucket"] = self.s3_bucket
        return [f"SENTINOVA_SAGEMAKER_{key.upper()}" for key, value in needed.items() if not value]


class PackagedModel(BaseModel):
    """A model.tar.gz on local disk with its content digest."""

    path: str
    sha256: str
    bytes: int


class SmokeResult(BaseModel):
    """What the smoke test sent, got and concluded."""

    passed: bool
    reason: str
    seconds: float
    labels: list[str] = Field(default_factory=list)


class SageMakerDeployment(BaseModel):
    """The outcome of a rollout to a SageMaker endpoint."""

    endpoint_name: str
    endpoint_config_name: str
    model_name: str
    model_data_url: str
    action: Literal["created", "updated", "unchanged"]
    previous_config_name: str | None
    status: str
    smoke: SmokeResult


def sagemaker_name(*parts: str | int) -> str:
    """Return a SageMaker resource name: letters, digits and hyphens, at most 63 characters."""
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", "-".join(str(p) for p in parts)).strip("-")
    return name[:63].rstrip("-")


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Fixed owners and times make the archive, and so its digest and S3 key, reproducible.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def package_model_dir(model_dir: str | Path, out_path: str | Path) -> PackagedModel:
    """Write the model folder's contents, at the archive's top level, as a reproducible tar.gz."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    if not model_dir.is_dir():
        raise SageMakerError(f"model folder {model_dir} does not exist")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file() or path.is_dir():
                archive.add(path, arcname=str(path.relative_to(model_dir)), recursive=False,
                            filter=_tar_filter)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
        zipped.write(buffer.getvalue())
    data = out_path.read_bytes()
    return PackagedModel(path=str(out_path), sha256=hashlib.sha256(data).hexdigest(),
                         bytes=len(data))


def package_model(model_uri: str, work_dir: str | Path) -> PackagedModel:
    """Download an MLflow model and package it as model.tar.gz for /opt/ml/model."""
    import mlflow.artifacts

    from sentinova.settings import configure_mlflow

    configure_mlflow()
    work_dir = Path(work_dir)
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri,
                                                dst_path=str(work_dir / "model"))
    return package_model_dir(local, work_dir / "model.tar.gz")


def check_predictions(body: bytes, count: int) -> list[dict]:
    """Return the predictions of an /invocations answer, raising ValueError if they break it."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"answer is not JSON: {body[:80]!r}") from None
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(predictions, list) or len(predictions) != count:
        raise ValueError(f"expected {count} predictions, got {str(payload)[:120]}")
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, dict) or prediction.get("label") not in LABELS:
            raise ValueError(f"prediction {index} has no label among {LABELS}")
        probs = prediction.get("probs")
        if (not isinstance(probs, list) or len(probs) != len(LABELS)
                or not all(isinstance(p, int | float) and math.isfinite(p) for p in probs)):
            raise ValueError(f"prediction {index} probs are not three numbers")
        if abs(sum(probs) - 1.0) > 1e-3 or min(probs) < 0:
            raise ValueError(f"prediction {index} probs do not form a distribution: {probs}")
        if LABELS[probs.index(max(probs))] != prediction["label"]:
            raise ValueError(f"prediction {index} label is not its most probable class")
    return predictions


def smoke_test(runtime: Any, endpoint_name: str, tweets: list[str],
               inference_id: str) -> SmokeResult:
    """Invoke the endpoint through the runtime API and check the answer keeps the contract."""
    start = time.monotonic()
    try:
        answer = runtime.invoke_endpoint(
            EndpointName=endpoint_name, ContentType="application/json",
            Accept="application/json", Body=json.dumps({"inputs": tweets}).encode(),
            InferenceId=inference_id[:64],
        )
        predictions = check_predictions(answer["Body"].read(), len(tweets))
    except Exception as error:  # noqa: BLE001 - any failure here means the rollout is bad
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return SmokeResult(passed=False, reason=f"{type(error).__name__}: {reason}"[:500],
                           seconds=round(time.monotonic() - start, 3))
    return SmokeResult(passed=True, reason=f"{len(predictions)} predictions keep the contract",
                       seconds=round(time.monotonic() - start, 3),
                       labels=[p["label"] for p in predictions])


def _exists(call: Callable[[], Any]) -> bool:
    """Return whether a describe_* call finds its resource."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as error:
        message = str(error).lower()
        if "could not find" in message or "does not exist" in message:
            return False
        raise
    return True


def ensure_model(client: Any, name: str, image_uri: str, model_data_url: str, role_arn: str,
                 environment: dict[str, str]) -> bool:
    """Create the SageMaker Model unless it exists; return whether it was created."""
    if _exists(lambda: client.describe_model(ModelName=name)):
        return False
    client.create_model(
        ModelName=name, ExecutionRoleArn=role_arn,
        PrimaryContainer={"Image": image_uri, "ModelDataUrl": model_data_url,
                          "Environment": environment},
    )
    return True


def ensure_endpoint_config(client: Any, name: str, model_name: str, instance_type: str,
                           instance_count: int) -> bool:
    """Create the EndpointConfig unless it exists; return whether it was created."""
    if _exists(lambda: client.describe_endpoint_config(EndpointConfigName=name)):
        return False
    client.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[{"VariantName": VARIANT, "ModelName": model_name,
                             "InitialInstanceCount": instance_count,
                             "InstanceType": instance_type, "InitialVariantWeight": 1.0}],
    )
    return True


def current_config(client: Any, endpoint_name: str) -> str | None:
    """Return the EndpointConfig an endpoint serves, or None when there is no such endpoint."""
    from botocore.exceptions import ClientError

    try:
        return client.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
    except ClientError as error:
        if "could not find" in str(error).lower():
            return None
        raise


def blue_green_update(client: Any, endpoint_name: str, config_name: str,
                      termination_wait_s: int) -> None:
    """Move the endpoint to a config blue/green: new fleet first, old fleet kept for a while."""
    client.update_endpoint(
        EndpointName=endpoint_name, EndpointConfigName=config_name,
        RetainAllVariantProperties=False,
        DeploymentConfig={"BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
            "TerminationWaitInSeconds": termination_wait_s,
        }},
    )


def wait_in_service(client: Any, endpoint_name: str, config_name: str, timeout_s: float,
                    poll_s: float, sleep: Callable[[float], None] = time.sleep) -> str:
    """Wait until the endpoint is InService on config_name; return the status."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = client.describe_endpoint(EndpointName=endpoint_name)
        status = described["EndpointStatus"]
        if status == "InService":
            if described["EndpointConfigName"] != config_name:
                reason = described.get("FailureReason", "no reason given")
                raise SageMakerError(f"{endpoint_name} is InService on "
                                     f"{described['EndpointConfigName']}, not {config_name}: "
                                     f"{reason}")
            return status
        if status not in TRANSITIONAL:
            raise SageMakerError(f"{endpoint_name} is {status}: "
                                 f"{described.get('FailureReason', 'no reason given')}")
        if time.monotonic() >= deadline:
            raise SageMakerError(f"{endpoint_name} still {status} after {timeout_s:.0f} s")
        sleep(poll_s)


def roll_out(sagemaker: Any, runtime: Any, endpoint_name: str, config_name: str,
             model_name: str, model_data_url: str, smoke_tweets: list[str],
             config: SageMakerConfig, sleep: Callable[[float], None] = time.sleep,
             ) -> SageMakerDeployment:
    """Point the endpoint at config_name, wait, smoke test, and roll back if the test fails."""
    previous = current_config(sagemaker, endpoint_name)
    if previous is None:
        action = "created"
        sagemaker.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
    elif previous == config_name:
        action = "unchanged"
    else:
        action = "updated"
        blue_green_update(sagemaker, endpoint_name, config_name, config.termination_wait_s)
    log.info("%s endpoint %s on %s (was %s)", action, endpoint_name, config_name, previous)

    status = wait_in_service(sagemaker, endpoint_name, config_name, config.wait_timeout_s,
                             config.poll_interval_s, sleep)
    smoke = smoke_test(runtime, endpoint_name, smoke_tweets, f"smoke-{config_name}")
    if smoke.passed:
        return SageMakerDeployment(endpoint_name=endpoint_name, endpoint_config_name=config_name,
                                   model_name=model_name, model_data_url=model_data_url,
                                   action=action, previous_config_name=previous, status=status,
                                   smoke=smoke)

    if action == "updated":
        blue_green_update(sagemaker, endpoint_name, previous, config.termination_wait_s)
        wait_in_service(sagemaker, endpoint_name, previous, config.wait_timeout_s,
                        config.poll_interval_s, sleep)
        outcome = f"rolled back to {previous}"
    elif action == "created":
        # A new endpoint has no earlier config to return to; deleting it stops the cost.
        sagemaker.delete_endpoint(EndpointName=endpoint_name)
        outcome = f"deleted the new endpoint {endpoint_name}"
    else:
        outcome = "the endpoint already served this config, so there is nothing to roll back to"
    raise SageMakerError(f"smoke test of {config_name} failed ({smoke.reason}); {outcome}")


def aws_credentials(config: SageMakerConfig):
    """Return the prefect-aws AwsCredentials to use: the named block, or the default chain."""
    from prefect_aws import AwsCredentials

    if config.aws_credentials_block:
        credentials = AwsCredentials.load(config.aws_credentials_block)
    else:
        credentials = AwsCredentials()
    if config.region and credentials.region_name != config.region:
        credentials = credentials.model_copy(update={"region_name": config.region})
    if not credentials.region_name:
        raise SageMakerError("no AWS region: set SENTINOVA_SAGEMAKER_REGION or the block's region")
    return credentials


def s3_bucket(config: SageMakerConfig, credentials: Any):
    """Return the prefect-aws S3Bucket block that receives model.tar.gz."""
    from prefect_aws import S3Bucket

    if config.s3_bucket_block:
        return S3Bucket.load(config.s3_bucket_block)
    if not config.s3_bucket:
        raise SageMakerError("no S3 bucket: set SENTINOVA_SAGEMAKER_S3_BUCKET or an S3 block")
    return S3Bucket(bucket_name=config.s3_bucket, credentials=credentials)


@task(name="package-model")
def package_task(model_uri: str, work_dir: str) -> PackagedModel:
    """Package the registered model as model.tar.gz."""
    packaged = package_model(model_uri, work_dir)
    get_run_logger().info("packaged %s: %d bytes, sha256 %s", model_uri, packaged.bytes,
                          packaged.sha256[:12])
    return packaged


@task(name="upload-model", retries=2, retry_delay_seconds=5)
def upload_task(packaged: PackagedModel, config: SageMakerConfig, credentials: Any,
                model_name: str, version: int) -> str:
    """Upload model.tar.gz under a content-addressed key; return its s3:// URL."""
    bucket = s3_bucket(config, credentials)
    key = f"{config.s3_prefix.strip('/')}/{model_name}/v{version}-{packaged.sha256[:12]}"
    path = bucket.upload_from_path(packaged.path, f"{key}/model.tar.gz")
    url = f"s3://{bucket.bucket_name}/{path}"
    get_run_logger().info("uploaded model.tar.gz to %s", url)
    return url


@task(name="create-sagemaker-model", retries=2, retry_delay_seconds=10)
def create_model_task(config: SageMakerConfig, credentials: Any, name: str,
                      model_data_url: str) -> str:
    """Create the SageMaker Model and its EndpointConfig (both named after the package)."""
    client = credentials.get_client("sagemaker")
    environment = {"SENTINOVA_SERVE_" + k.upper(): v for k, v in config.serve_environment.items()}
    made_model = ensure_model(client, name, config.image_uri, model_data_url, config.role_arn,
                              environment)
    made_config = ensure_endpoint_config(client, name, name, config.instance_type,
                                         config.instance_count)
    get_run_logger().info("SageMaker Model %s (%s) and EndpointConfig (%s) on %d x %s", name,
                          "created" if made_model else "exists",
                          "created" if made_config else "exists", config.instance_count,
                          config.instance_type)
    return name


@task(name="roll-out-endpoint")
def roll_out_task(config: SageMakerConfig, credentials: Any, config_name: str,
                  model_data_url: str, smoke_tweets: list[str]) -> SageMakerDeployment:
    """Create or blue/green-update the endpoint, wait for InService, smoke test, roll back."""
    deployment = roll_out(credentials.get_client("sagemaker"),
                          credentials.get_client("sagemaker-runtime"), config.endpoint_name,
                          config_name, config_name, model_data_url, smoke_tweets, config)
    get_run_logger().info("endpoint %s %s on %s; smoke test passed in %.2f s: %s",
                          deployment.endpoint_name, deployment.action, config_name,
                          deployment.smoke.seconds, deployment.smoke.labels)
    return deployment
