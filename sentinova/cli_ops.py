"""Operations commands: `up` and `down` for the local stack, `webhook`, and `sign` for notices."""

from __future__ import annotations

import json
import logging
import os
from typing import Annotated, Optional

import typer

from sentinova.settings import configure_environment, get_settings

Host = Annotated[str, typer.Option(help="Interface to listen on (loopback unless you mean it).")]
PrefectPort = Annotated[int, typer.Option(envvar="SENTINOVA_PREFECT_PORT",
                                          help="Port of the Prefect server and UI.")]
MlflowPort = Annotated[int, typer.Option(envvar="SENTINOVA_MLFLOW_PORT",
                                         help="Port of the MLflow UI.")]
WebhookPort = Annotated[int, typer.Option(envvar="SENTINOVA_WEBHOOK_PORT",
                                          help="Port of the webhook.")]
Tolerance = Annotated[int, typer.Option(
    help="Seconds a signed timestamp stays valid; older or replayed notices get 401.")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _api_url(explicit: str | None) -> str:
    from sentinova.stack import StackConfig, recorded_api_url

    return (explicit or os.environ.get("PREFECT_API_URL") or recorded_api_url()
            or StackConfig.from_settings().prefect_api_url)


def up(prefect_port: PrefectPort = 4200, mlflow_port: MlflowPort = 5000,
       webhook: Annotated[bool, typer.Option(
           help="Also start the webhook (needs SENTINOVA_WEBHOOK_SECRET or the Secret block).")
       ] = False,
       webhook_port: WebhookPort = 8787) -> None:
    """Start the Prefect server, a worker per work pool and the MLflow UI on loopback."""
    from sentinova.stack import StackConfig, StackError, up as stack_up, webhook_service

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = StackConfig.from_settings(prefect_port=prefect_port, mlflow_port=mlflow_port)
    extra = []
    if webhook:
        if not os.environ.get("SENTINOVA_WEBHOOK_SECRET"):
            typer.echo("SENTINOVA_WEBHOOK_SECRET is unset: the webhook reads the Prefect Secret "
                       "block 'sentinova-webhook-secret'", err=True)
        extra.append(webhook_service(config, webhook_port))
    try:
        states = stack_up(config, extra)
    except StackError as exc:
        _fail(str(exc))

    for state in states:
        typer.echo(f"{state.name:<15} {state.action:<16} pid {state.pid:<8} "
                   f"{state.address or ''}")
    typer.echo(f"\nPrefect UI   {config.prefect_url}\nPrefect API  {config.prefect_api_url}\n"
               f"MLflow UI    {config.mlflow_url}\nstate, logs  {config.home}\n\n"
               f"export PREFECT_API_URL={config.prefect_api_url}")


def down() -> None:
    """Stop exactly the processes that `sentinova up` started (by their PID files)."""
    from sentinova.stack import StackConfig, down as stack_down

    for state in stack_down(StackConfig.from_settings()):
        pid = f"pid {state.pid}" if state.pid else ""
        typer.echo(f"{state.name:<15} {state.action:<16} {pid}")


def webhook(host: Host = "127.0.0.1", port: WebhookPort = 8787,
            api_url: Annotated[Optional[str], typer.Option(
                help="Prefect API URL (default: PREFECT_API_URL, else the stack's).")] = None,
            tolerance: Tolerance = 300) -> None:
    """Serve POST /notices: a signed notice of landed tweets becomes a Prefect event."""
    from sentinova.webhook import WebhookError, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    url = _api_url(api_url)
    os.environ["PREFECT_API_URL"] = url
    configure_environment()
    try:
        serve(host, port, url, get_settings().home.resolve(), tolerance)
    except WebhookError as exc:
        _fail(str(exc))


def sign(path: Annotated[str, typer.Option(help="Where the new tweet file lies.")],
         rows: Annotated[int, typer.Option(help="How many rows it holds.")],
         source: Annotated[Optional[str], typer.Option(help="Who wrote it.")] = None,
         send: Annotated[Optional[str], typer.Option(
             help="POST the notice to this webhook URL, e.g. http://127.0.0.1:8787/notices")
         ] = None) -> None:
    """Sign a tweets-landed notice with the shared secret; print it, or POST it with --send."""
    from sentinova.webhook import WebhookError, load_secret, signed_headers

    try:
        secret = load_secret()
    except WebhookError as exc:
        _fail(str(exc))
    notice = {"path": path, "rows": rows, **({"source": source} if source else {})}
    body = json.dumps(notice).encode()
    headers = signed_headers(secret, body)
    if send is None:
        # The body is printed as the exact string that was signed: re-serialising it (indented,
        # say) would change the bytes and break the signature.
        typer.echo(json.dumps({"headers": headers, "body": body.decode()}, indent=2))
        return

    import httpx

    try:
        response = httpx.post(send, content=body, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        _fail(f"could not reach {send}: {exc}")
    typer.echo(f"HTTP {response.status_code} {response.text}")
    if response.status_code >= 400:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the operations commands to the `sentinova` app."""
    app.command()(up)
    app.command()(down)
    app.command()(webhook)
    app.command()(sign)


if __name__ == "__main__":
    standalone = typer.Typer(add_completion=False, no_args_is_help=True)
    register(standalone)
    standalone()
