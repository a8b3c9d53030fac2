"""One real local stack for the session: `up` (Prefect server, workers, MLflow UI, webhook),
then `prefect deploy --all` from prefect.yaml; `down` at the end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

WEBHOOK_SECRET = "operations-test-secret-0123456789"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    """Return a loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Stack:
    """The running stack of the session and how to reach it."""

    config: object
    home: Path
    api_url: str
    webhook_url: str
    env: dict[str, str]

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Call the Prefect REST API, retrying while sqlite is busy (503)."""
        for attempt in range(6):
            response = httpx.request(method, f"{self.api_url}{path}", timeout=30.0, **kwargs)
            if response.status_code != 503:
                return response
            time.sleep(1 + attempt)
        return response

    def prefect(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run the prefect CLI against the stack from the repository root."""
        return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def deployment(self, flow: str, name: str) -> dict:
        """Return a deployment by flow and deployment name."""
        response = self.api("GET", f"/deployments/name/{flow}/{name}")
        assert response.status_code == 200, response.text
        return response.json()

    def flow_runs(self, deployment_id: str) -> list[dict]:
        """Return the flow runs of a deployment that something started (not scheduled ones)."""
        response = self.api("POST", "/flow_runs/filter", json={
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"not_any_": ["SCHEDULED"]}}}})
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_run(self, flow_run_id: str, timeout: float) -> dict:
        """Poll a flow run until its state is terminal and return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/flow_runs/{flow_run_id}").json()
            if run["state_type"] in TERMINAL:
                return run
            time.sleep(2)
        pytest.fail(f"flow run {flow_run_id} not finished after {timeout:.0f} s: "
                    f"{run['state_name']}")

    def artifacts(self, flow_run_id: str) -> dict[str, dict]:
        """Return the artifacts a flow run published, by key."""
        response = self.api("POST", "/artifacts/filter", json={
            "flow_runs": {"id": {"any_": [flow_run_id]}}})
        return {a["key"]: a for a in response.json() if a.get("key")}


@pytest.fixture(scope="session")
def ops_home(session_dir: Path) -> Path:
    """The SENTINOVA_HOME of the stack: its Prefect db, MLflow store, warehouse and logs."""
    home = session_dir / "operations"
    home.mkdir(parents=True, exist_ok=True)
    return home


@pytest.fixture(scope="session")
def stack(ops_home: Path, shared_data: Path):
    """`up` a real stack on free loopback ports for the session; `down` it afterwards."""
    from sentinova.stack import StackConfig, down, up, webhook_service

    config = StackConfig(home=ops_home, prefect_port=free_port(), mlflow_port=free_port(),
                         worker_poll_seconds=2,
                         mlflow_tracking_uri=f"sqlite:///{ops_home / 'mlflow.db'}")
    webhook_port = free_port()
    # The webhook service inherits the secret from this process's environment.
    previous_secret = os.environ.get("SENTINOVA_WEBHOOK_SECRET")
    os.environ["SENTINOVA_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    started = time.monotonic()
    try:
        states = up(config, [webhook_service(config, webhook_port)])
    except Exception:
        down(config)
        raise
    print(f"\nstack up in {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{s.name}={s.action}" for s in states))
    env = {**os.environ, "PREFECT_API_URL": config.prefect_api_url,
           "SENTINOVA_HOME": str(ops_home), "PREFECT_HOME": str(ops_home / "prefect"),
           "MLFLOW_TRACKING_URI": config.mlflow_tracking_uri, "SHARED": str(shared_data)}
    yield Stack(config, ops_home, config.prefect_api_url,
                f"http://127.0.0.1:{webhook_port}/notices", env)
    for state in down(config):
        print(f"down: {state.name} {state.action}")
    if previous_secret is None:
        os.environ.pop("SENTINOVA_WEBHOOK_SECRET", None)
    else:
        os.environ["SENTINOVA_WEBHOOK_SECRET"] = previous_secret


@pytest.fixture(scope="session")
def deployed(stack: Stack) -> Stack:
    """Create every deployment of prefect.yaml on the stack's server, as a user would."""
    started = time.monotonic()
    result = stack.prefect("--no-prompt", "deploy", "--all")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"\nprefect deploy --all in {time.monotonic() - started:.0f} s")
    return stack


@pytest.fixture(scope="session")
def small_files(session_dir: Path, shared_data: Path) -> dict[str, Path]:
    """Small real samples of the shared tweets: ETL input, landed file, validation set."""
    from tests.conftest import AIRLINE_FILE, TRAIN_FILE, VALIDATION_FILE, sample_lines

    folder = session_dir / "operations-data"
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "etl": sample_lines(TRAIN_FILE, folder / "semeval_sample.jsonl", 300, every=7),
        "landed": sample_lines(AIRLINE_FILE, folder / "airline_landed.jsonl", 300, every=5),
        "validation": sample_lines(VALIDATION_FILE, folder / "validation_sample.jsonl", 200),
    }


def tiny_training(small_files: dict[str, Path]) -> dict:
    """Return training parameters that make a real run short: few rows, one small epoch."""
    return {"validation": str(small_files["validation"]), "extra_eval": [], "suite": None,
            "config": {"epochs": 1, "max_rows": 400, "lstm_units": 16, "batch_size": 64}}


@pytest.fixture(scope="session")
def etl_run(deployed: Stack, small_files: dict[str, Path]) -> dict:
    """Run the etl deployment once from the CLI on a small sample; return the flow run."""
    params = json.dumps({"inputs": [str(small_files["etl"])]})
    started = time.monotonic()
    result = deployed.prefect("deployment", "run", "etl/etl", "--params", params, "--watch",
                              "--watch-timeout", "600")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    etl = deployed.deployment("etl", "etl")
    runs = [r for r in deployed.flow_runs(etl["id"])
            if r["parameters"].get("inputs") == [str(small_files["etl"])]]
    assert len(runs) == 1
    print(f"\netl deployment run in {time.monotonic() - started:.0f} s")
    return runs[0]
