"""Serving commands: `serve`, `promote`, `rollback` and `deploy`."""

from __future__ import annotations

import getpass
import logging
from typing import Annotated, Literal, Optional

import typer

from sentinova.settings import get_settings

Who = Annotated[Optional[str], typer.Option(help="Who asks for the change (default: your user).")]
Why = Annotated[str, typer.Option(help="Why the alias moves; recorded in the registry.")]


def _who(who: str | None) -> str:
    if who:
        return who
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _champion_uri() -> str:
    settings = get_settings()
    return f"models:/{settings.model_name}@{settings.champion_alias}"


def serve(
    model: Annotated[Optional[str], typer.Option(
        help="MLflow model URI or model folder; default: the registry's champion.")] = None,
    host: Annotated[Optional[str], typer.Option(
        help="Interface to listen on; loopback unless you mean it.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (SageMaker expects 8080).")] = None,
    max_body_bytes: Annotated[Optional[int], typer.Option(
        help="Largest request body accepted; larger gets 413.")] = None,
    max_inputs: Annotated[Optional[int], typer.Option(
        help="Most tweets in one request; more gets 413.")] = None,
    max_batch: Annotated[Optional[int], typer.Option(
        help="Most tweets predicted together in one micro-batch.")] = None,
    max_wait_ms: Annotated[Optional[float], typer.Option(
        help="Longest a request waits for others to share its micro-batch.")] = None,
    micro_batch: Annotated[Optional[bool], typer.Option(
        "--micro-batch/--no-micro-batch", help="Gather concurrent requests into one call.")
    ] = None,
) -> None:
    """Serve a model behind the SageMaker contract: GET /ping, POST /invocations."""
    from components.serve import ServeConfig, serve_model

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"host": host, "port": port, "max_body_bytes": max_body_bytes,
                 "max_inputs": max_inputs, "max_batch_texts": max_batch,
                 "max_wait_ms": max_wait_ms, "micro_batch": micro_batch}
    config = ServeConfig(**{key: value for key, value in overrides.items() if value is not None})
    serve_model(model if model is not None else _champion_uri(), config)


def promote(
    version: Annotated[int, typer.Option(help="Registered model version to make champion.")],
    why: Why,
    who: Who = None,
) -> None:
    """Make a registered version the champion by hand, recording who asked and why."""
    from components.promote import champion_version
    from components.promote import promote as promote_version
    from sentinova.settings import get_settings

    if champion_version(get_settings().model_name) == version:
        # Nothing moves, so nothing is recorded: the history lists only real changes.
        typer.echo(f"version {version} is already the champion; nothing changed")
        return
    change = promote_version(version, _who(who), why)
    typer.echo(f"{change.model_name}@{change.alias}: version {change.version} "
               f"(was {change.previous}), by {change.who}")


def rollback(why: Why, who: Who = None) -> None:
    """Give the champion alias back to the version that held it before, recording who and why."""
    from components.promote import rollback as rollback_champion

    change = rollback_champion(_who(who), why)
    typer.echo(f"{change.model_name}@{change.alias}: rolled back to version {change.version} "
               f"(was {change.previous}), by {change.who}")


def deploy(
    target: Annotated[str, typer.Option(help="local | sagemaker")] = "local",
    version: Annotated[Optional[int], typer.Option(
        help="Registered version to deploy; default: the champion.")] = None,
    host: Annotated[str, typer.Option(help="Local target: interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Local target: port.")] = 8080,
    stop: Annotated[bool, typer.Option(
        "--stop", help="Local target: stop the managed server on --port instead.")] = False,
    endpoint_name: Annotated[Optional[str], typer.Option(help="SageMaker endpoint.")] = None,
    region: Annotated[Optional[str], typer.Option(help="AWS region.")] = None,
    role_arn: Annotated[Optional[str], typer.Option(help="SageMaker execution role ARN.")] = None,
    image_uri: Annotated[Optional[str], typer.Option(help="ECR URI of the serving image.")] = None,
    instance_type: Annotated[Optional[str], typer.Option(help="e.g. ml.m5.large.")] = None,
    instance_count: Annotated[Optional[int], typer.Option(help="Instances behind it.")] = None,
    s3_bucket: Annotated[Optional[str], typer.Option(help="Bucket for model.tar.gz.")] = None,
    aws_credentials_block: Annotated[Optional[str], typer.Option(
        help="prefect-aws AwsCredentials block name.")] = None,
    s3_bucket_block: Annotated[Optional[str], typer.Option(
        help="prefect-aws S3Bucket block name.")] = None,
) -> None:
    """Run the deploy flow: serve locally (default) or roll out to a SageMaker endpoint."""
    if target not in ("local", "sagemaker"):
        raise typer.BadParameter(f"target must be local or sagemaker, not {target!r}")
    if stop:
        from components.deploy import stop_local_server

        stopped = stop_local_server(port)
        typer.echo(f"stopped the server on port {port}" if stopped else
                   f"no managed server on port {port}")
        return

    from flows.deploy import deploy_flow

    chosen: Literal["local", "sagemaker"] = "local" if target == "local" else "sagemaker"
    report = deploy_flow(target=chosen, version=version, host=host, port=port,
                         endpoint_name=endpoint_name, region=region, role_arn=role_arn,
                         image_uri=image_uri, instance_type=instance_type,
                         instance_count=instance_count, s3_bucket=s3_bucket,
                         aws_credentials_block=aws_credentials_block,
                         s3_bucket_block=s3_bucket_block)
    if report.local is not None:
        typer.echo(f"{report.model.uri} served at {report.local.url} (pid {report.local.pid}, "
                   f"log {report.local.log_file})")
    elif report.sagemaker is not None:
        typer.echo(f"{report.model.uri} {report.sagemaker.action} on SageMaker endpoint "
                   f"{report.sagemaker.endpoint_name} ({report.sagemaker.endpoint_config_name})")


def register(app: typer.Typer) -> None:
    """Add the serving commands to the `sentinova` app."""
    app.command()(serve)
    app.command()(promote)
    app.command()(rollback)
    app.command()(deploy)
