"""The webhook: signatures, staleness, replays and notice validation; then, on the real stack,
a signed notice that retrains through the deployment trigger, and refused ones that do not."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from sentinova.webhook import (
    EVENT_NAME,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayGuard,
    WebhookError,
    create_app,
    load_secret,
    signature,
    signed_headers,
)
from tests.operations.conftest import WEBHOOK_SECRET, Stack, free_port, tiny_training

SECRET = b"unit-test-secret-0123456789"
NOTICE = {"path": "/data/landing/tweets-2026-12-04.jsonl", "rows": 1200}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """A webhook whose Prefect API is a closed port: a refused request never reaches it."""
    app = create_app(SECRET, ReplayGuard(tmp_path / "seen.db"),
                     api_url=f"http://127.0.0.1:{free_port()}/api", tolerance=300)
    return TestClient(app)


def post(client: TestClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post("/notices", content=body, headers=headers)


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    import hashlib
    import hmac

    expected = hmac.new(SECRET, b"1700000000.{}", hashlib.sha256).hexdigest()

    assert signature(SECRET, "1700000000", b"{}") == f"sha256={expected}"


def test_an_unsigned_notice_gets_401(client):
    response = post(client, json.dumps(NOTICE).encode(), {"Content-Type": "application/json"})

    assert response.status_code == 401
    assert response.json()["error"].startswith("unsigned")


def test_a_notice_signed_with_another_secret_gets_401(client):
    body = json.dumps(NOTICE).encode()

    response = post(client, body, signed_headers(b"another-secret-0123456789", body))

    assert response.status_code == 401
    assert response.json() == {"error": "wrong signature"}


def test_a_notice_whose_body_was_changed_after_signing_gets_401(client):
    body = json.dumps(NOTICE).encode()
    headers = signed_headers(SECRET, body)

    response = post(client, json.dumps({**NOTICE, "rows": 1}).encode(), headers)

    assert response.status_code == 401


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_outside_the_tolerance_gets_401(client, skew):
    body = json.dumps(NOTICE).encode()

    response = post(client, body, signed_headers(SECRET, body, int(time.time()) + skew))

    assert response.status_code == 401
    assert response.json()["error"].startswith("stale")


def test_a_timestamp_that_is_not_a_number_gets_401(client):
    body = json.dumps(NOTICE).encode()
    headers = {TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: signature(SECRET, "x", body)}

    assert post(client, body, headers).status_code == 401


def test_a_body_that_is_not_json_gets_400(client):
    body = b'{"path": "/data/x.jsonl", "rows": '

    response = post(client, body, signed_headers(SECRET, body))

    assert response.status_code == 400
    assert response.json()["error"].startswith("body is not valid JSON")


@pytest.mark.parametrize("notice, problem", [
    ({"rows": 10}, "path: Field required"),
    ({"path": "/data/x.jsonl"}, "rows: Field required"),
    ({"path": "", "rows": 10}, "path: String should have at least 1 character"),
    ({"path": "/data/x.jsonl", "rows": 0}, "rows: Input should be greater than or equal to 1"),
    ({"path": "/data/x.jsonl", "rows": "many"}, "rows: Input should be a valid integer"),
    ({"path": "/data/x.jsonl", "rows": 3, "colour": "red"}, "colour: Extra inputs"),
    ({"path": "landing/x.jsonl", "rows": 3}, "path: Value error, must be an absolute path"),
    ({"path": "/data/x\u0000y.jsonl", "rows": 3}, "path: Value error, must not contain control"),
    ({"path": "/data/x.jsonl", "rows": "3"}, "rows: Input should be a valid integer"),
    ({"path": "/data/x.jsonl", "rows": True}, "rows: Input should be a valid integer"),
    ([1, 2], "body: Input should be a valid dictionary"),
])
def test_a_notice_lacking_or_mistyping_fields_gets_400(client, notice, problem):
    body = json.dumps(notice).encode()

    response = post(client, body, signed_headers(SECRET, body))

    assert response.status_code == 400
    assert problem in response.json()["error"]


def test_a_valid_notice_that_cannot_reach_prefect_gets_503_and_may_be_retried(client):
    body = json.dumps(NOTICE).encode()
    headers = signed_headers(SECRET, body)

    first = post(client, body, headers)
    retry = post(client, body, headers)

    assert first.status_code == 503
    assert retry.status_code == 503
    assert "unreachable" in retry.json()["error"]


def test_the_replay_guard_remembers_signatures_across_restarts(tmp_path: Path):
    now = time.time()
    ReplayGuard(tmp_path / "seen.db").claim("sha256=abc", expires_at=now + 300, now=now)

    reopened = ReplayGuard(tmp_path / "seen.db")

    assert reopened.claim("sha256=abc", expires_at=now + 300, now=now) is False
    assert reopened.claim("sha256=def", expires_at=now + 300, now=now) is True
    assert reopened.claim("sha256=abc", expires_at=now + 600, now=now + 301) is True


def test_the_secret_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SENTINOVA_WEBHOOK_SECRET", "from-the-environment-123")

    assert load_secret() == b"from-the-environment-123"


def test_a_short_secret_is_refused(monkeypatch):
    monkeypatch.setenv("SENTINOVA_WEBHOOK_SECRET", "short")

    with pytest.raises(WebhookError, match="at least 16 characters"):
        load_secret()


def test_health_answers(client):
    assert client.get("/health").json() == {"status": "ok"}


def signed_post(url: str, notice: dict, secret: bytes = WEBHOOK_SECRET.encode(),
                timestamp: int | None = None) -> tuple[httpx.Response, bytes, dict]:
    body = json.dumps(notice).encode()
    headers = signed_headers(secret, body, timestamp)
    return httpx.post(url, content=body, headers=headers, timeout=30), body, headers


def events_about(stack: Stack, path: str) -> list[dict]:
    """Return the events the Prefect server holds about a tweet file."""
    response = stack.api("POST", "/events/filter", json={"filter": {
        "event": {"name": [EVENT_NAME]},
        "resource": {"id": [f"sentinova.tweets.{path}"]},
        "occurred": {"since": "2000-01-01T00:00:00Z"}}})
    assert response.status_code == 200, response.text
    return response.json()["events"]


@pytest.mark.slow
def test_a_signed_notice_retrains_through_the_pipeline_trigger(deployed: Stack, small_files):
    pipeline = deployed.deployment("pipeline", "pipeline")
    # Keep the deployment's trigger, and shrink what it trains so the run is short.
    response = deployed.api("PATCH", f"/deployments/{pipeline['id']}", json={
        "parameters": {**pipeline["parameters"], **tiny_training(small_files)}})
    assert response.status_code == 204, response.text
    landed = str(small_files["landed"])
    started = time.monotonic()

    accepted, body, headers = signed_post(deployed.webhook_url, {"path": landed, "rows": 300})
    replayed = httpx.post(deployed.webhook_url, content=body, headers=headers, timeout=30)

    assert accepted.status_code == 202, accepted.text
    assert replayed.status_code == 401
    assert replayed.json()["error"].startswith("replayed")
    event_id = accepted.json()["event_id"]
    deadline = time.monotonic() + 60
    while not (runs := [r for r in deployed.flow_runs(pipeline["id"])
                        if r["parameters"].get("inputs") == [landed]]):
        assert time.monotonic() < deadline, "the trigger made no flow run within 60 s"
        time.sleep(2)
    run = deployed.wait_for_run(runs[0]["id"], timeout=900)
    elapsed = time.monotonic() - started

    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["created_by"]["type"] == "AUTOMATION"
    assert run["created_by"]["display_value"] == "sentinova-retrain-on-landed-tweets"
    assert run["name"].startswith("pipeline-") and run["name"].endswith("-airline")
    assert [e["id"] for e in events_about(deployed, landed)] == [event_id]
    assert len([r for r in deployed.flow_runs(pipeline["id"])
                if r["parameters"].get("inputs") == [landed]]) == 1
    print(f"\nwebhook -> event -> pipeline run completed in {elapsed:.0f} s")


@pytest.mark.slow
def test_refused_notices_make_no_event_and_no_run(deployed: Stack, tmp_path: Path):
    url = deployed.webhook_url
    path = str(tmp_path / "refused.jsonl")
    notice = json.dumps({"path": path, "rows": 10}).encode()

    unsigned = httpx.post(url, content=notice, timeout=30)
    wrong, _, _ = signed_post(url, {"path": path, "rows": 10}, secret=b"not-the-secret-1234567")
    stale, _, _ = signed_post(url, {"path": path, "rows": 10},
                              timestamp=int(time.time()) - 3600)
    malformed = httpx.post(url, content=b"{not json", timeout=30,
                           headers=signed_headers(WEBHOOK_SECRET.encode(), b"{not json"))
    missing, _, _ = signed_post(url, {"path": path})

    assert [r.status_code for r in (unsigned, wrong, stale, malformed, missing)] == [
        401, 401, 401, 400, 400]
    time.sleep(10)
    assert events_about(deployed, path) == []
    pipeline = deployed.deployment("pipeline", "pipeline")
    assert [r for r in deployed.flow_runs(pipeline["id"])
            if r["parameters"].get("inputs") == [path]] == []
