"""Deploy flow: the champion (or a named version) to a local server or a SageMaker endpoint."""

from __future__ import annotations

import tempfile
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel

from components.deploy import LocalServer, ModelRef, resolve_model_task, serve_locally_task
from components.sagemaker import (
    SMOKE_TWEETS,
    SageMakerConfig,
    SageMakerDeployment,
    SageMakerError,
    aws_credentials,
    create_model_task,
    package_task,
    roll_out_task,
    sagemaker_name,
    upload_task,
)


class DeployReport(BaseModel):
    """Which model went where: the local server or the SageMaker rollout."""

    target: Literal["local", "sagemaker"]
    model: ModelRef
    local: LocalServer | None = None
    sagemaker: SageMakerDeployment | None = None


def _run_name() -> str:
    from prefect.runtime import flow_run

    version = flow_run.parameters.get("version")
    target = flow_run.parameters.get("target") or "local"
    return f"deploy-{target}-" + (f"v{version}" if version else "champion")


@flow(name="deploy", flow_run_name=_run_name, log_prints=False)
def deploy_flow(
    target: Literal["local", "sagemaker"] = "local",
    version: int | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    smoke_tweets: list[str] | None = None,
    ping_timeout_s: float = 180.0,
    endpoint_name: str | None = None,
    region: str | None = None,
    role_arn: str | None = None,
    image_uri: str | None = None,
    instance_type: str | None = None,
    instance_count: int | None = None,
    s3_bucket: str | None = None,
    aws_credentials_block: str | None = None,
    s3_bucket_block: str | None = None,
) -> DeployReport:
    """Serve the champion (or `version`) locally, or roll it out to a SageMaker endpoint.

    SageMaker parameters left as None come from SENTINOVA_SAGEMAKER_* settings.
    """
    logger = get_run_logger()
    tweets = smoke_tweets or SMOKE_TWEETS
    model = resolve_model_task(version)

    if target == "local":
        server = serve_locally_task(model, host, port, tweets, ping_timeout_s)
        return DeployReport(target=target, model=model, local=server)

    overrides = {
        "endpoint_name": endpoint_name, "region": region, "role_arn": role_arn,
        "image_uri": image_uri, "instance_type": instance_type,
        "instance_count": instance_count, "s3_bucket": s3_bucket,
        "aws_credentials_block": aws_credentials_block, "s3_bucket_block": s3_bucket_block,
    }
    config = SageMakerConfig(**{k: v for k, v in overrides.items() if v is not None})
    missing = config.missing()
    if missing:
        raise SageMakerError(f"SageMaker deployment needs {', '.join(missing)}")
    credentials = aws_credentials(config)

    with tempfile.TemporaryDirectory(prefix="sentinova-package-") as work_dir:
        packaged = package_task(model.uri, work_dir)
        model_data_url = upload_task(packaged, config, credentials, model.name, model.version)
    # Named by endpoint, version and content, so a re-run reuses the Model and EndpointConfig.
    name = sagemaker_name(config.endpoint_name, f"v{model.version}", packaged.sha256[:8])
    config_name = create_model_task(config, credentials, name, model_data_url)
    deployment = roll_out_task(config, credentials, config_name, model_data_url, tweets)
    logger.info("%s is live on SageMaker endpoint %s (%s)", model.uri, deployment.endpoint_name,
                deployment.action)
    return DeployReport(target=target, model=model, sagemaker=deployment)
