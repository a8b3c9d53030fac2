"""prefect.yaml on a real server: what `prefect deploy --all` creates, and CLI runs of it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.operations.conftest import Stack, tiny_training

pytestmark = pytest.mark.slow


def test_deploy_all_creates_the_four_deployments_on_their_pools(deployed: Stack):
    found = {d["name"]: d for d in deployed.api("POST", "/deployments/filter", json={}).json()}

    assert {name: d["work_pool_name"] for name, d in found.items()} == {
        "etl": "cpu", "train": "gpu", "deploy": "cpu", "pipeline": "gpu"}
    assert {name: d["entrypoint"] for name, d in found.items()} == {
        "etl": "flows/etl.py:etl_flow", "train": "flows/training.py:training_flow",
        "deploy": "flows/deploy.py:deploy_flow", "pipeline": "flows/pipeline.py:pipeline_flow"}
    assert all(d["enforce_parameter_schema"] for d in found.values())
    assert all(d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {
        "directory": str(REPO)}}] for d in found.values())


def test_etl_runs_daily_and_training_weekly(deployed: Stack):
    schedules = {name: [s["schedule"] for s in deployed.deployment(flow, name)["schedules"]]
                 for flow, name in (("etl", "etl"), ("training", "train"))}

    assert schedules["etl"] == [{"cron": "0 3 * * *", "timezone": "UTC", "day_or": True}]
    assert schedules["train"] == [{"cron": "0 4 * * 0", "timezone": "UTC", "day_or": True}]


def test_the_pipeline_deployment_has_the_landed_tweets_trigger(deployed: Stack):
    pipeline = deployed.deployment("pipeline", "pipeline")
    automations = deployed.api("POST", "/automations/filter", json={}).json()

    [automation] = [a for a in automations if a["name"] == "sentinova-retrain-on-landed-tweets"]
    assert automation["enabled"]
    assert automation["trigger"]["expect"] == ["sentinova.tweets.landed"]
    assert automation["trigger"]["match"] == {"prefect.resource.id": "sentinova.tweets.*"}
    [action] = automation["actions"]
    assert action["type"] == "run-deployment"
    assert action["deployment_id"] == pipeline["id"]
    assert action["parameters"] == {"inputs": ["{{ event.payload.path }}"]}


def test_a_bad_parameter_is_refused_with_a_clear_message(deployed: Stack):
    result = deployed.prefect("deployment", "run", "etl/etl", "--params", '{"inputs": 3}',
                              timeout=120)

    assert result.returncode == 1
    output = " ".join((result.stdout + result.stderr).split())
    assert "Validation failed for field 'inputs'. Failure reason: 3 is not of type 'array'" \
        in output


def create_parked_run(stack: Stack, deployment_id: str, parameters: dict):
    """Ask the server for a run scheduled far ahead, so that a wrongly accepted one never runs."""
    response = stack.api("POST", f"/deployments/{deployment_id}/create_flow_run", json={
        "parameters": parameters, "state": {"type": "SCHEDULED", "state_details": {
            "scheduled_time": "2099-01-01T00:00:00Z"}}})
    if response.status_code == 201:
        stack.api("DELETE", f"/flow_runs/{response.json()['id']}")
    return response


def test_a_mistyped_training_option_is_refused_by_the_server(deployed: Stack):
    train = deployed.deployment("training", "train")

    response = create_parked_run(deployed, train["id"], {"config": {"epochs": "three"}})

    assert response.status_code == 409
    assert "epochs" in response.json()["detail"]


def test_a_misspelt_training_option_is_refused_rather_than_ignored(deployed: Stack):
    train = deployed.deployment("training", "train")

    response = create_parked_run(deployed, train["id"], {"config": {"epoch": 1}})

    assert response.status_code == 409
    assert "epoch" in response.json()["detail"]


def test_the_etl_deployment_run_from_the_cli_completes(etl_run: dict, deployed: Stack):
    artifacts = deployed.artifacts(etl_run["id"])

    assert etl_run["state_type"] == "COMPLETED"
    assert etl_run["name"].startswith("etl-") and etl_run["name"].endswith("-semeval")
    counts = artifacts["etl-counts"]["data"]
    counts = json.loads(counts) if isinstance(counts, str) else counts
    assert counts[0]["rows read"] == 300
    assert counts[0]["loaded"] + counts[0]["duplicates skipped"] \
        + counts[0]["quarantined"] == 300
    assert counts[0]["loaded"] > 250


def test_the_training_deployment_run_from_the_cli_completes(etl_run: dict, deployed: Stack,
                                                           small_files: dict[str, Path]):
    params = json.dumps(tiny_training(small_files))
    started = time.monotonic()

    result = deployed.prefect("deployment", "run", "training/train", "--params", params,
                              "--watch", "--watch-timeout", "900")

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    train = deployed.deployment("training", "train")
    [run] = [r for r in deployed.flow_runs(train["id"])
             if r["parameters"].get("validation") == str(small_files["validation"])
             and "airflow" not in r["tags"]]
    assert run["state_type"] == "COMPLETED"
    assert run["name"].startswith("train-")
    assert {"evaluation", "confusion-matrix", "behaviour-report"} <= set(
        deployed.artifacts(run["id"]))
    print(f"\ntraining deployment run in {time.monotonic() - started:.0f} s")
