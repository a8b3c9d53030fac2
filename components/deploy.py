"""Deploy stage: pick the model version to ship and run `sentinova serve` as a managed process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prefect import get_run_logger, task
from pydantic import BaseModel

from sentinova.settings import configure_mlflow, get_settings
from sentinova.stack import pid_alive

log = logging.getLogger(__name__)


class DeployError(RuntimeError):
    """A deployment that did not come up, with the reason in one line."""


class ModelRef(BaseModel):
    """A pinned registered model version, by reference."""

    name: str
    version: int
    uri: str


class LocalServer(BaseModel):
    """A `sentinova serve` process started and watched by the deploy flow."""

    pid: int
    host: str
    port: int
    url: str
    model_uri: str
    pid_file: str
    log_file: str
    started_at: str
    ping_seconds: float = 0.0


def resolve_model(version: int | None = None) -> ModelRef:
    """Return the named version, or the champion's, of the registered model, pinned by number."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    settings = get_settings()
    configure_mlflow()
    client = MlflowClient()
    name = settings.model_name
    try:
        if version is None:
            found = client.get_model_version_by_alias(name, settings.champion_alias)
        else:
            found = client.get_model_version(name, str(version))
    except MlflowException:
        wanted = f"version {version}" if version is not None else settings.champion_alias
        raise DeployError(f"registered model {name} has no {wanted}") from None
    number = int(found.version)
    return ModelRef(name=name, version=number, uri=f"models:/{name}/{number}")


def serve_dir() -> Path:
    """Return the folder under SENTINOVA_HOME holding serve pid and log files."""
    folder = get_settings().home.resolve() / "serve"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pid_file(port: int) -> Path:
    """Return the pid file of the managed server on a port."""
    return serve_dir() / f"serve-{port}.json"


def serve_command(model_uri: str, host: str, port: int) -> list[str]:
    """Return the argv that runs `sentinova serve` with this interpreter."""
    return [sys.executable, "-m", "sentinova.cli", "serve", "--model", model_uri,
            "--host", host, "--port", str(port)]


def _is_our_server(pid: int, port: int) -> bool:
    """Return whether pid runs `sentinova serve` on this port (guards against reused pids)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return pid_alive(pid)
    try:
        argv = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and str(port).encode() in argv


def running_server(port: int) -> LocalServer | None:
    """Return the managed server recorded for a port if its process is still alive."""
    path = pid_file(port)
    if not path.exists():
        return None
    try:
        server = LocalServer.model_validate_json(path.read_text())
    except ValueError:
        path.unlink(missing_ok=True)
        return None
    if pid_alive(server.pid) and _is_our_server(server.pid, port):
        return server
    path.unlink(missing_ok=True)
    return None


def stop_local_server(port: int, timeout_s: float = 15.0) -> bool:
    """Stop the managed server on a port; return whether one was running."""
    server = running_server(port)
    if server is None:
        return False
    os.kill(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(server.pid):
        os.kill(server.pid, signal.SIGKILL)
    pid_file(port).unlink(missing_ok=True)
    log.info("stopped the server on port %d (pid %d)", port, server.pid)
    return True


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_ping(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> float:
    """Poll GET {url}/ping until it answers 200; return the seconds it took."""
    start = time.monotonic()
    last = "no answer yet"
    while time.monotonic() - start < timeout_s:
        if process is not None and process.poll() is not None:
            raise DeployError(f"the server exited with code {process.returncode} before /ping")
        try:
            answer = httpx.get(f"{url}/ping", timeout=2.0)
            if answer.status_code == 200:
                return time.monotonic() - start
            last = f"HTTP {answer.status_code}"
        except httpx.HTTPError as error:
            last = type(error).__name__
        time.sleep(0.25)
    raise DeployError(f"{url}/ping did not answer 200 within {timeout_s:.0f} s ({last})")


def start_local_server(
    model_uri: str, host: str = "127.0.0.1", port: int = 8080, timeout_s: float = 180.0
) -> LocalServer:
    """Replace any managed server on the port with one serving model_uri; return it once up."""
    stop_local_server(port)
    if _port_in_use(host, port):
        raise DeployError(f"port {port} on {host} is taken by a process Sentinova did not start")

    log_path = serve_dir() / f"serve-{port}.log"
    # The child imports the same checkout as this process, installed or not.
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "SENTINOVA_HOME": str(get_settings().home.resolve()),
           "PYTHONPATH": path}
    with log_path.open("ab") as log_handle:
        # A session of its own, so the server outlives the flow run that started it.
        process = subprocess.Popen(
            serve_command(model_uri, host, port), stdout=log_handle, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    url = f"http://{host}:{port}"
    server = LocalServer(pid=process.pid, host=host, port=port, url=url, model_uri=model_uri,
                         pid_file=str(pid_file(port)), log_file=str(log_path),
                         started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    pid_file(port).write_text(server.model_dump_json(indent=2))

    try:
        server.ping_seconds = round(wait_for_ping(url, timeout_s, process), 2)
    except DeployError as error:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        pid_file(port).unlink(missing_ok=True)
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise DeployError(f"{error}; last log line: {tail[0][:300]}") from None
    pid_file(port).write_text(server.model_dump_json(indent=2))
    return server


def smoke_test_local(url: str, tweets: list[str]) -> list[dict]:
    """Return the served predictions for a few tweets; raise if the answer breaks the contract."""
    from components.sagemaker import check_predictions

    answer = httpx.post(f"{url}/invocations", json={"inputs": tweets}, timeout=30.0)
    if answer.status_code != 200:
        raise DeployError(f"smoke test got HTTP {answer.status_code}: {answer.text[:200]}")
    return check_predictions(answer.content, len(tweets))


@task(name="resolve-model")
def resolve_model_task(version: int | None = None) -> ModelRef:
    """Pin the champion (or the named version) of the registered model."""
    model = resolve_model(version)
    get_run_logger().info("deploying %s", model.uri)
    return model


@task(name="serve-locally")
def serve_locally_task(
    model: ModelRef, host: str, port: int, smoke_tweets: list[str], timeout_s: float = 180.0
) -> LocalServer:
    """Run `sentinova serve` for the model as a managed process and check /ping and a request."""
    logger = get_run_logger()
    server = start_local_server(model.uri, host, port, timeout_s)
    predictions = smoke_test_local(server.url, smoke_tweets)
    logger.info("serving %s at %s (pid %d, /ping after %.1f s); smoke test: %s", model.uri,
                server.url, server.pid, server.ping_seconds,
                json.dumps([p["label"] for p in predictions]))
    return server
