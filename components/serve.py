"""Serving: the SageMaker inference contract over HTTP, with micro-batched predictions."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentinova.settings import LABELS

log = logging.getLogger(__name__)

PredictProba = Callable[[list[str]], np.ndarray]

JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
WARM_UP_TWEET = "warming up the sentiment model :)"


class ServeConfig(BaseSettings):
    """How the server listens, what it accepts and how it batches (SENTINOVA_SERVE_*)."""

    model_config = SettingsConfigDict(env_prefix="SENTINOVA_SERVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    max_inputs: int = Field(default=512, gt=0)
    micro_batch: bool = True
    max_batch_texts: int = Field(default=64, gt=0)
    max_wait_ms: float = Field(default=2.0, ge=0)


class RequestError(Exception):
    """A client error that becomes a 4xx answer with a JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str | None) -> str:
    """Return the bare, lower-case media type of a Content-Type header ('' when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def accepts_json(accept: str | None) -> bool:
    """Return whether an Accept header allows a JSON answer (no header allows anything)."""
    if not accept:
        return True
    for part in accept.split(","):
        kind = media_type(part)
        if kind in ("", "*/*", "application/*", JSON_TYPE):
            return True
    return False


def checked_media_type(content_type: str | None) -> str:
    """Return the request's media type, raising RequestError 415 unless it is JSON or CSV."""
    kind = media_type(content_type)
    if kind not in (JSON_TYPE, CSV_TYPE):
        shown = kind or "no content type"
        raise RequestError(
            415, f"unsupported content type {shown!r}; use {JSON_TYPE} or {CSV_TYPE}"
        )
    return kind


def parse_invocation(body: bytes, content_type: str | None, max_inputs: int) -> list[str]:
    """Return the tweets of an /invocations body, or raise RequestError saying what is wrong."""
    kind = checked_media_type(content_type)

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"body is not valid UTF-8 (byte {error.start})") from None

    tweets = _parse_json(text) if kind == JSON_TYPE else _parse_csv(text)

    if not tweets:
        raise RequestError(400, "no tweets to predict: the inputs list is empty")
    if len(tweets) > max_inputs:
        raise RequestError(413, f"{len(tweets)} tweets exceed the limit of {max_inputs} a request")
    return tweets


def _parse_json(text: str) -> list[str]:
    """Return the `inputs` list of a JSON body after checking its shape."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise RequestError(400, f"malformed JSON: {error.msg} at line {error.lineno}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None

    if not isinstance(payload, dict) or "inputs" not in payload:
        raise RequestError(400, 'JSON body must be an object {"inputs": ["tweet", ...]}')
    inputs = payload["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(400, '"inputs" must be a list of tweet strings')
    for index, tweet in enumerate(inputs):
        if not isinstance(tweet, str):
            kind = type(tweet).__name__
            raise RequestError(400, f'"inputs"[{index}] is of type {kind}, not a tweet string')
        if not tweet.strip():
            # As in `sentinova predict`: there is no sentiment to read in an empty text.
            raise RequestError(400, f'"inputs"[{index}] is an empty text')
        # A lone surrogate (a JSON escape such as \ud800) is no Unicode text; caught here, it
        # fails its own request instead of the micro-batch it would have joined.
        try:
            tweet.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(400, f'"inputs"[{index}] is not valid Unicode text') from None
    return inputs


def _parse_csv(text: str) -> list[str]:
    """Return one tweet a CSV record; blank lines are skipped."""
    tweets = []
    # A record split on unquoted commas is rejoined, since "one tweet a line" is the contract
    # and raw tweets often carry commas; quoted records keep their embedded newlines.
    try:
        for record in csv.reader(io.StringIO(text, newline="")):
            if record:
                tweets.append(",".join(record))
    except csv.Error as error:
        raise RequestError(400, f"malformed CSV: {error}") from None
    return tweets


def prediction_records(probs: np.ndarray) -> list[dict]:
    """Return the contract's prediction records for an (n, 3) probability array."""
    winners = np.asarray(probs).argmax(axis=1)
    return [
        {"label": LABELS[int(winner)], "probs": row}
        for winner, row in zip(winners, np.asarray(probs).tolist(), strict=True)
    ]


def _checked_probabilities(probs: object, count: int) -> np.ndarray:
    """Return predict_proba's answer as an array, raising if its shape is not (count, 3)."""
    array = np.asarray(probs)
    if array.shape != (count, len(LABELS)):
        raise ValueError(f"predict_proba returned shape {array.shape}, not ({count}, 3)")
    return array


@dataclass
class _Pending:
    tweets: list[str]
    future: asyncio.Future = field(repr=False)
    arrived: float = 0.0


class MicroBatcher:
    """Gathers concurrent requests and predicts them together with one predict_proba call."""

    def __init__(
        self,
        predict_proba: PredictProba,
        max_batch_texts: int = 64,
        max_wait_ms: float = 2.0,
        enabled: bool = True,
    ) -> None:
        self.predict_proba = predict_proba
        self.max_batch_texts = max_batch_texts
        self.max_wait_s = max_wait_ms / 1000.0
        self.enabled = enabled
        self.batches = 0
        self.tweets = 0
        # One inference thread: the model already spreads its own work over the cores,
        # and the event loop must stay free to read the next requests meanwhile.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentinova-predict")
        self._waiting: deque[_Pending] = deque()
        self._queued = 0
        self._wakeup: asyncio.Future | None = None
        self._worker: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        """Return whether the batching worker is alive (always true when batching is off)."""
        if not self.enabled:
            return True
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        """Start the batching worker on the running event loop."""
        if self.enabled:
            self._worker = asyncio.create_task(self._work(), name="sentinova-micro-batcher")

    async def stop(self) -> None:
        """Stop the worker and the inference thread."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def predict(self, tweets: list[str]) -> np.ndarray:
        """Return the (n, 3) probabilities of the tweets, batched with concurrent requests."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self.batches += 1
            self.tweets += len(tweets)
            probs = await loop.run_in_executor(self._executor, self.predict_proba, tweets)
            return _checked_probabilities(probs, len(tweets))

        if not self.running:
            raise RuntimeError("the micro-batching worker is not running")
        pending = _Pending(tweets, loop.create_future(), time.monotonic())
        self._waiting.append(pending)
        self._queued += len(tweets)
        if len(self._waiting) == 1 or self._queued >= self.max_batch_texts:
            self._wake()
        return await pending.future

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _sleep_until_woken(self, timeout: float | None) -> None:
        """Wait for a new request (or a full batch), at most timeout seconds."""
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        timer = loop.call_later(timeout, self._wake) if timeout is not None else None
        try:
            await self._wakeup
        finally:
            if timer is not None:
                timer.cancel()
            self._wakeup = None

    async def _gather(self) -> list[_Pending]:
        """Return the next batch once it is full or its oldest request has waited max_wait."""
        while not self._waiting:
            await self._sleep_until_woken(None)

        # The oldest request bounds the wait, so a request that queued behind a running
        # prediction is sent at once rather than waiting again for company.
        while self._queued < self.max_batch_texts:
            remaining = self._waiting[0].arrived + self.max_wait_s - time.monotonic()
            if remaining <= 0:
                break
            await self._sleep_until_woken(remaining)

        batch = [self._waiting.popleft()]
        size = len(batch[0].tweets)
        while self._waiting and size + len(self._waiting[0].tweets) <= self.max_batch_texts:
            pending = self._waiting.popleft()
            batch.append(pending)
            size += len(pending.tweets)
        self._queued -= size
        return batch

    async def _work(self) -> None:
        """Predict batch after batch until cancelled; a failed batch fails only its requests."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [pending for pending in await self._gather() if not pending.future.done()]
            if not batch:
                continue
            tweets = [tweet for pending in batch for tweet in pending.tweets]
            self.batches += 1
            self.tweets += len(tweets)

            try:
                probs = await loop.run_in_executor(self._executor, self.predict_proba, tweets)
                probs = _checked_probabilities(probs, len(tweets))
            except Exception as error:  # noqa: BLE001 - handed to each waiting request
                log.exception("prediction of a batch of %d tweets failed", len(tweets))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue

            start = 0
            for pending in batch:
                stop = start + len(pending.tweets)
                if not pending.future.done():
                    pending.future.set_result(probs[start:stop])
                start = stop


def _json_body(payload: dict) -> bytes:
    """Return a payload as compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _error_body(status: int, message: str) -> bytes:
    """Return the JSON error body for a status and reason."""
    return _json_body({"error": message, "status": status})


class InferenceApp:
    """ASGI app of the SageMaker inference contract: GET /ping and POST /invocations."""

    def __init__(self, predict_proba: PredictProba, config: ServeConfig | None = None) -> None:
        self.config = config or ServeConfig()
        self.batcher = MicroBatcher(
            predict_proba,
            max_batch_texts=self.config.max_batch_texts,
            max_wait_ms=self.config.max_wait_ms,
            enabled=self.config.micro_batch,
        )

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            status, body = await self._answer(scope, receive)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", JSON_TYPE.encode()),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.batcher.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.batcher.stop()
                log.info(
                    "served %d tweets in %d batches", self.batcher.tweets, self.batcher.batches
                )
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _answer(self, scope: dict, receive: Callable) -> tuple[int, bytes]:
        """Return the status and JSON body answering one HTTP request."""
        path, method = scope["path"], scope["method"]
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return 405, _error_body(405, "use GET /ping")
            if not self.batcher.running:
                return 503, _error_body(503, "the prediction worker has stopped")
            return 200, b'{"status":"ok"}'
        if path != "/invocations":
            return 404, _error_body(404, f"no such path {path!r}; use /ping or /invocations")
        if method != "POST":
            return 405, _error_body(405, "use POST /invocations")

        headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
        try:
            tweets = await self._read_tweets(headers, receive)
        except RequestError as error:
            return error.status, _error_body(error.status, error.message)

        try:
            probs = await self.batcher.predict(tweets)
        except Exception as error:  # noqa: BLE001 - a failed prediction must not kill the server
            log.error("prediction failed for a request of %d tweets: %s", len(tweets), error)
            return 500, _error_body(500, f"prediction failed: {type(error).__name__}")
        return 200, _json_body({"predictions": prediction_records(probs)})

    async def _read_tweets(self, headers: dict[str, bytes], receive: Callable) -> list[str]:
        """Return the tweets of an /invocations request after checking headers, size and body."""
        accept = headers.get("accept", b"").decode("latin-1")
        if not accepts_json(accept):
            raise RequestError(406, f"answers are {JSON_TYPE}; the Accept header refuses it")
        content_type = headers.get("content-type", b"").decode("latin-1")
        checked_media_type(content_type)

        limit = self.config.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise RequestError(400, "Content-Length is not a number")
        if declared is not None and int(declared) > limit:
            raise RequestError(413, f"body of {int(declared)} bytes exceeds the limit of {limit}")

        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return parse_invocation(b"".join(chunks), content_type, self.config.max_inputs)


def create_app(predict_proba: PredictProba, config: ServeConfig | None = None) -> InferenceApp:
    """Return the ASGI app answering /ping and /invocations with the given predictor."""
    return InferenceApp(predict_proba, config)


def warm_up(predict_proba: PredictProba, batch_sizes: Sequence[int]) -> float:
    """Run predict_proba once for each batch size so first requests pay no tracing; return s."""
    start = time.perf_counter()
    for size in batch_sizes:
        _checked_probabilities(predict_proba([WARM_UP_TWEET] * size), size)
    return time.perf_counter() - start


def run_server(predict_proba: PredictProba, config: ServeConfig) -> None:
    """Serve the predictor on config.host:config.port until interrupted."""
    import uvicorn

    app = create_app(predict_proba, config)
    log.info(
        "serving on http://%s:%d (micro-batching %s, max batch %d, max wait %.1f ms)",
        config.host,
        config.port,
        "on" if config.micro_batch else "off",
        config.max_batch_texts,
        config.max_wait_ms,
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def check_port_free(host: str, port: int) -> None:
    """Raise OSError now if host:port cannot be listened on, before a model is loaded for it."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def serve_model(model_uri: str, config: ServeConfig) -> None:
    """Load the classifier at model_uri, warm it up and serve it behind the contract."""
    # A plain path has no URI scheme; saying it is missing beats MLflow's artifact error.
    if ":" not in model_uri and not Path(model_uri).exists():
        raise FileNotFoundError(f"no model folder at {model_uri}")
    from components.model import load_classifier

    check_port_free(config.host, config.port)
    start = time.perf_counter()
    classifier = load_classifier(model_uri)
    loaded = time.perf_counter() - start
    warm = warm_up(classifier.predict_proba, sorted({1, config.max_batch_texts}))
    log.info("loaded %s in %.1f s, warmed up in %.1f s", model_uri, loaded, warm)
    run_server(classifier.predict_proba, config)
