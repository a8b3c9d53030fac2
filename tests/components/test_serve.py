"""The serving contract, checked over real HTTP against a deterministic predictor."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
import uvicorn

from components.serve import (
    RequestError,
    ServeConfig,
    accepts_json,
    create_app,
    parse_invocation,
    prediction_records,
)
from sentinova.settings import LABELS


class CountingPredictor:
    """A deterministic predict_proba that records the size of every call."""

    def __init__(self, fail_on: str | None = None, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on
        self.delay_s = delay_s

    def __call__(self, tweets: list[str]) -> np.ndarray:
        self.calls.append(len(tweets))
        if self.fail_on is not None and self.fail_on in tweets:
            raise RuntimeError("the model cannot read this tweet")
        if self.delay_s:
            time.sleep(self.delay_s)
        return expected_probs(tweets)


def expected_probs(tweets: list[str]) -> np.ndarray:
    """Return probabilities that depend only on each tweet's text."""
    codes = np.array([zlib.crc32(t.encode()) % 997 for t in tweets], dtype=np.float32)
    raw = np.stack([codes + 1, 997 - codes, np.full_like(codes, 300)], axis=1)
    return raw / raw.sum(axis=1, keepdims=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    """A real uvicorn server on a loopback port, run in a thread for one test."""

    def __init__(self, predictor, **config) -> None:
        self.predictor = predictor
        self.config = ServeConfig(port=free_port(), **config)
        self.app = create_app(predictor, self.config)
        self.url = f"http://127.0.0.1:{self.config.port}"
        uv_config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.config.port, log_level="warning"
        )
        self.server = uvicorn.Server(uv_config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    with RunningServer(CountingPredictor(), max_body_bytes=2_000, max_inputs=5) as running:
        yield running


def invoke(url: str, content: bytes | str, content_type: str = "application/json", **headers):
    return httpx.post(
        f"{url}/invocations",
        content=content,
        headers={"content-type": content_type, **headers},
        timeout=10,
    )


def test_ping_answers_200_once_the_server_is_up(server):
    answer = httpx.get(f"{server.url}/ping", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_json_invocation_returns_predictions_in_order_equal_to_predict_proba(server):
    tweets = ["I love this airline!", "worst delay ever @united", "flight at 6pm"]
    answer = invoke(server.url, httpx.Request("POST", "/", json={"inputs": tweets}).content)

    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    expected = expected_probs(tweets)
    assert [p["probs"] for p in predictions] == expected.tolist()
    assert [p["label"] for p in predictions] == [LABELS[i] for i in expected.argmax(axis=1)]


def test_csv_invocation_reads_one_tweet_a_line_and_quoted_records(server):
    body = 'great flight, thanks\n"a quoted, tweet\nover two lines"\n\nsad :(\n'
    answer = invoke(server.url, body, "text/csv; charset=utf-8")

    assert answer.status_code == 200
    tweets = ["great flight, thanks", "a quoted, tweet\nover two lines", "sad :("]
    assert [p["probs"] for p in answer.json()["predictions"]] == expected_probs(tweets).tolist()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b'{"inputs": ["a"', "application/json", 400, "malformed JSON"),
        (b'{"inputs": []}', "application/json", 400, "empty"),
        (b'{"tweets": ["a"]}', "application/json", 400, '{"inputs"'),
        (b'{"inputs": "a"}', "application/json", 400, "must be a list"),
        (b'{"inputs": ["a", 3]}', "application/json", 400, '"inputs"[1] is of type int'),
        (b'{"inputs": ["a", "  "]}', "application/json", 400, '"inputs"[1] is an empty text'),
        (b'{"inputs": ["a", "\\ud800 x"]}', "application/json", 400, "not valid Unicode"),
        (b"\xff\xfe", "application/json", 400, "UTF-8"),
        (b"\n\n", "text/csv", 400, "empty"),
        (b'{"inputs": ["a"]}', "text/plain", 415, "unsupported content type 'text/plain'"),
        (b'{"inputs": ["a"]}', "", 415, "no content type"),
        (b'{"inputs": ["1","2","3","4","5","6"]}', "application/json", 413, "limit of 5"),
        (b'{"inputs": ["' + b"x" * 3_000 + b'"]}', "application/json", 413, "exceeds"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_json_error(server, body, content_type, status, reason):
    answer = invoke(server.url, body, content_type)

    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert reason in answer.json()["error"]
    assert httpx.get(f"{server.url}/ping", timeout=5).status_code == 200


def test_chunked_body_over_the_limit_is_refused_without_content_length(server):
    def chunks():
        for _ in range(10):
            yield b'{"inputs": ["' + b"y" * 500

    answer = httpx.post(
        f"{server.url}/invocations",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 413
    assert "exceeds the limit of 2000 bytes" in answer.json()["error"]


def test_accept_header_refusing_json_gets_406_and_unknown_paths_get_json_404_405(server):
    assert invoke(server.url, b'{"inputs": ["a"]}', accept="text/html").status_code == 406
    assert invoke(server.url, b'{"inputs": ["a"]}', accept="*/*").status_code == 200

    missing = httpx.get(f"{server.url}/predict", timeout=5)
    assert missing.status_code == 404
    assert "/invocations" in missing.json()["error"]
    assert httpx.get(f"{server.url}/invocations", timeout=5).status_code == 405


def test_a_failing_prediction_answers_500_and_the_server_keeps_serving():
    with RunningServer(CountingPredictor(fail_on="boom")) as running:
        failed = invoke(running.url, b'{"inputs": ["boom"]}')
        assert failed.status_code == 500
        assert failed.json()["error"] == "prediction failed: RuntimeError"

        assert httpx.get(f"{running.url}/ping", timeout=5).status_code == 200
        assert invoke(running.url, b'{"inputs": ["fine"]}').status_code == 200


async def _concurrent_singles(url: str, tweets: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await asyncio.gather(
            *(client.post("/invocations", json={"inputs": [tweet]}) for tweet in tweets)
        )


def test_concurrent_requests_are_micro_batched_into_few_predict_calls():
    predictor = CountingPredictor(delay_s=0.02)
    tweets = [f"tweet number {i}" for i in range(32)]
    with RunningServer(predictor, max_batch_texts=64, max_wait_ms=20) as running:
        answers = asyncio.run(_concurrent_singles(running.url, tweets))

    assert [a.status_code for a in answers] == [200] * 32
    got = [a.json()["predictions"][0]["probs"] for a in answers]
    assert got == expected_probs(tweets).tolist()
    assert sum(predictor.calls) == 32
    assert len(predictor.calls) <= 4
    assert max(predictor.calls) >= 8


def test_with_micro_batching_off_every_request_is_its_own_predict_call():
    predictor = CountingPredictor()
    tweets = [f"tweet number {i}" for i in range(12)]
    with RunningServer(predictor, micro_batch=False) as running:
        answers = asyncio.run(_concurrent_singles(running.url, tweets))

    assert [a.status_code for a in answers] == [200] * 12
    assert predictor.calls == [1] * 12


def test_a_batch_never_exceeds_max_batch_texts_unless_one_request_is_larger():
    predictor = CountingPredictor(delay_s=0.01)
    with RunningServer(predictor, max_batch_texts=4, max_wait_ms=50) as running:
        big = invoke(running.url, httpx.Request("POST", "/", json={"inputs": ["a"] * 7}).content)
        answers = asyncio.run(_concurrent_singles(running.url, [str(i) for i in range(10)]))

    assert big.status_code == 200 and len(big.json()["predictions"]) == 7
    assert all(a.status_code == 200 for a in answers)
    assert predictor.calls[0] == 7
    assert max(predictor.calls[1:]) <= 4
    assert sum(predictor.calls[1:]) == 10


def test_parse_invocation_rejoins_unquoted_commas_and_checks_the_count():
    assert parse_invocation(b"so, so good\nmeh\n", "text/csv", 5) == ["so, so good", "meh"]
    with pytest.raises(RequestError) as error:
        parse_invocation(b'{"inputs": ["a", "b"]}', "application/json", 1)
    assert error.value.status == 413


def test_accepts_json_allows_wildcards_and_no_header():
    assert accepts_json(None) and accepts_json("*/*") and accepts_json("application/json")
    assert accepts_json("text/html, application/*;q=0.5")
    assert not accepts_json("text/csv")


def test_prediction_records_label_is_the_most_probable_class():
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]], dtype=np.float32)
    records = prediction_records(probs)
    assert [r["label"] for r in records] == ["positive", "negative"]
    assert records[0]["probs"] == probs[0].tolist()


@pytest.fixture(scope="module")
def real_classifier(tmp_path_factory, shared_data):
    """A small real Sentinova classifier (own WordPiece vocabulary, untrained BiLSTM)."""
    from components.model import load_classifier
    from tests.flows.test_deploy_flow import build_tiny_model

    return load_classifier(str(build_tiny_model(tmp_path_factory.mktemp("serve") / "model")))


def test_served_predictions_of_a_real_model_equal_its_predict_proba(real_classifier):
    from tests.conftest import AIRLINE_FILE, read_jsonl

    tweets = [row["rawContent"] for row in read_jsonl(AIRLINE_FILE)[:40]]
    with RunningServer(real_classifier.predict_proba, max_wait_ms=5) as running:
        together = invoke(running.url, json.dumps({"inputs": tweets}))
        singles = asyncio.run(_concurrent_singles(running.url, tweets))

    expected = real_classifier.predict_proba(tweets)
    served = np.array([p["probs"] for p in together.json()["predictions"]], dtype=np.float32)
    assert np.array_equal(served, expected)
    # Concurrent singles share micro-batches padded to their longest tweet; the LSTM's mask
    # keeps padding out, so they differ from one call only by float rounding.
    each = np.array([a.json()["predictions"][0]["probs"] for a in singles], dtype=np.float32)
    np.testing.assert_allclose(each, expected, atol=1e-6)
    assert [a.json()["predictions"][0]["label"] for a in singles] == [
        p["label"] for p in together.json()["predictions"]]


def test_garbage_on_the_socket_gets_a_400_and_the_server_keeps_serving(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        reply = sock.recv(200)
    assert reply.startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{server.url}/ping", timeout=5).status_code == 200


def test_serving_on_a_taken_port_fails_before_loading_a_model(tmp_path):
    from components.serve import ServeConfig, serve_model

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.perf_counter()
        # The folder exists but holds no model: reaching the loader would fail differently.
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_model(str(tmp_path), ServeConfig(port=port))
    assert time.perf_counter() - started < 5


def test_json_nested_past_the_recursion_limit_is_a_400_not_a_crash():
    from components.serve import RequestError, _parse_json

    with pytest.raises(RequestError, match="nested too deeply") as refused:
        _parse_json("[" * 100_000 + "]" * 100_000)
    assert refused.value.status == 400
