"""The operations commands as a user types them: down, sign, webhook, up's refusals."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from sentinova.cli_ops import register
from sentinova.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

SECRET = "cli-test-secret-0123456789"


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def home(tmp_path, monkeypatch):
    from sentinova.settings import get_settings

    monkeypatch.setenv("SENTINOVA_HOME", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_register_adds_up_down_webhook_and_sign(app):
    names = {command.name or command.callback.__name__ for command in app.registered_commands}

    assert names == {"up", "down", "webhook", "sign"}


def test_down_with_nothing_running_says_so_for_each_service(app, home):
    result = CliRunner().invoke(app, ["down"])

    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == [
        "mlflow", "worker-gpu", "worker-cpu", "prefect-server"]
    assert all("not running" in line for line in lines)


def test_sign_prints_headers_that_verify_against_the_body(app, monkeypatch):
    monkeypatch.setenv("SENTINOVA_WEBHOOK_SECRET", SECRET)

    result = CliRunner().invoke(app, ["sign", "--path", "/data/new.jsonl", "--rows", "42"])

    assert result.exit_code == 0
    signed = json.loads(result.output)
    # The printed body is the exact string signed, so it can be sent as it is.
    body = signed["body"].encode()
    assert json.loads(body) == {"path": "/data/new.jsonl", "rows": 42}
    assert signed["headers"][SIGNATURE_HEADER] == signature(
        SECRET.encode(), signed["headers"][TIMESTAMP_HEADER], body)


def test_sign_without_a_secret_fails_with_one_line(app, monkeypatch, tmp_path):
    monkeypatch.delenv("SENTINOVA_WEBHOOK_SECRET", raising=False)
    # No Prefect server answers here, so the Secret block cannot be read either.
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")

    result = CliRunner().invoke(app, ["sign", "--path", "/x.jsonl", "--rows", "1"])

    assert result.exit_code == 1
    assert result.output.startswith("error: no webhook secret: set SENTINOVA_WEBHOOK_SECRET")
    assert len(result.output.strip().splitlines()) == 1


def test_up_refuses_a_taken_port_with_one_line(app, home):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        result = CliRunner().invoke(app, ["up", "--prefect-port", str(port)])

    assert result.exit_code == 1
    assert f"error: port {port} on 127.0.0.1 is taken by another process" in result.output
