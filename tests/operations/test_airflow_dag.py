"""The Airflow DAG `sentinova` run with dag.test() in .venv-airflow against the session's server.

Airflow 3 cannot live in Sentinova's .venv, so these tests need .venv-airflow, which
`bash deployments/airflow/test_dag.sh` builds; without it they are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.operations.conftest import Stack, free_port, tiny_training

AIRFLOW_PYTHON = Path(os.environ.get("AIRFLOW_VENV", REPO / ".venv-airflow")) / "bin" / "python"
RUNNER = REPO / "deployments" / "airflow" / "run_dag_test.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AIRFLOW_PYTHON.exists(),
                       reason="no .venv-airflow: run bash deployments/airflow/test_dag.sh"),
]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    """An Airflow home with a migrated sqlite metadata database."""
    home = tmp_path_factory.mktemp("airflow")
    result = subprocess.run([str(AIRFLOW_PYTHON.parent / "airflow"), "db", "migrate"],
                            env=airflow_env(home, "http://127.0.0.1:9/api"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return home


def airflow_env(home: Path, api_url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "AIRFLOW", "VIRTUAL_ENV"))}
    return {**keep, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(RUNNER.parent / "dags"),
            "AIRFLOW_CONN_PREFECT_API": api_url}


def run_dag(home: Path, api_url: str, conf: dict, expect: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(AIRFLOW_PYTHON), str(RUNNER), "--conf", json.dumps(conf),
                           "--expect", expect], env=airflow_env(home, api_url),
                          capture_output=True, text=True, timeout=1800)


def test_a_failed_prefect_run_fails_its_task_with_the_run_url(deployed: Stack, airflow_home):
    conf = {"etl_parameters": {"inputs": ["/nonexistent/landing/tweets.jsonl"]}}

    result = run_dag(airflow_home, deployed.api_url, conf, expect="failed")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "task etl: failed" in output
    assert "task train: upstream_failed" in output
    assert "ended Failed" in output and "input file not found" in output
    assert f"{deployed.api_url[:-4]}/runs/flow-run/" in output


def test_the_dag_runs_etl_train_and_deploy_in_order(deployed: Stack, airflow_home,
                                                     small_files, etl_run):
    port = free_port()
    conf = {"etl_parameters": {"inputs": [str(small_files["landed"])]},
            "train_parameters": tiny_training(small_files),
            "deploy_parameters": {"target": "local", "port": port}}
    started = time.monotonic()
    try:
        result = run_dag(airflow_home, deployed.api_url, conf, expect="success")
    finally:
        subprocess.run([sys.executable, "-c", "import sys; from components.deploy import "
                        "stop_local_server; stop_local_server(int(sys.argv[1]))", str(port)],
                       cwd=REPO, env=deployed.env, timeout=60)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert [line for line in output.splitlines() if line.startswith("task ")] == [
        "task etl: success", "task train: success", "task deploy: success"]
    names = {d["id"]: d["name"]
             for d in deployed.api("POST", "/deployments/filter", json={}).json()}
    runs = deployed.api("POST", "/flow_runs/filter", json={
        "flow_runs": {"tags": {"all_": ["airflow"]}, "state": {"type": {"any_": ["COMPLETED"]}}},
        "sort": "START_TIME_ASC"}).json()
    assert [names[r["deployment_id"]] for r in runs] == ["etl", "train", "deploy"]
    print(f"\nAirflow dag.test() etl -> train -> deploy in {time.monotonic() - started:.0f} s")
