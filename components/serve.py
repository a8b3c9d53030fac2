"""Serving: the SageMaker inference contract over HTTP, with micro-batched predictions."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
        raise RequestError(415, f"unsupported content type {shown!r}; use {JSON_TYPE} or {CSV_TYPE}")
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

    if not isinstance(payload, dict) or "inputs" not in payload:
        raise RequestError(400, 'JSON body must be an object {"inputs": ["tweet", ...]}')
    inputs = payload["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(400, '"inputs" must be a list of tweet strings')
    for index, tweet in enumerate(inputs):
        if not isinstance(tweet, str):
            kind = type(tweet).__name__
            raise RequestError(400, f'"inputs"[{index}] is a {kind}, not a tweet string')
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
        self._queue: asyncio.Queue[_Pending] | None = None
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
            self._queue = asyncio.Queue()
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
        pending = _Pending(tweets, loop.create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def _gather(self) -> list[_Pending]:
        """Return the next batch: the first waiting request and those that join it in time."""
        queue = self._queue
        batch = [await queue.get()]
        size = len(batch[0].tweets)
        deadline = time.monotonic() + self.max_wait_s

        while size < self.max_batch_texts:
            if queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                pending = queue.get_nowait()
            batch.append(pending)
            size += len(pending.tweets)
        return batch

    async def _work(self) -> None:
        """Predict batch after batch until cancelled; a failed batch fails only its requests."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            batch = [pending for pending in batch if not pending.future.done()]
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


def _json_response(payload: dict, status: int = 200) -> Response:
    """Return a compact JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type=JSON_TYPE)


def _error(status: int, message: str) -> Response:
    """Return the JSON error answer for a status and reason."""
    return _json_response({"error": message, "status": status}, status)


async def _read_body(request: Request, limit: int) -> bytes:
    """Return the request body, refusing it as soon as it is known to exceed the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise RequestError(413, f"body of {declared} bytes exceeds the limit of {limit}")

    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(predict_proba: PredictProba, config: ServeConfig | None = None) -> Starlette:
    """Return the ASGI app answering /ping and /invocations with the given predictor."""
    config = config or ServeConfig()
    batcher = MicroBatcher(
        predict_proba,
        max_batch_texts=config.max_batch_texts,
        max_wait_ms=config.max_wait_ms,
        enabled=config.micro_batch,
    )

    async def ping(request: Request) -> Response:
        if not batcher.running:
            return _error(503, "the prediction worker has stopped")
        return _json_response({"status": "ok"})

    async def invocations(request: Request) -> Response:
        try:
            if not accepts_json(request.headers.get("accept")):
                raise RequestError(406, f"answers are {JSON_TYPE}; the Accept header refuses it")
            kind = request.headers.get("content-type")
            checked_media_type(kind)
            body = await _read_body(request, config.max_body_bytes)
            tweets = parse_invocation(body, kind, config.max_inputs)
        except RequestError as error:
            return _error(error.status, error.message)

        try:
            probs = await batcher.predict(tweets)
        except Exception as error:  # noqa: BLE001 - a failed prediction must not kill the server
            log.error("prediction failed for a request of %d tweets: %s", len(tweets), error)
            return _error(500, f"prediction failed: {type(error).__name__}")
        return _json_response({"predictions": prediction_records(probs)})

    async def http_error(request: Request, error: HTTPException) -> Response:
        return _error(error.status_code, error.detail)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            log.info("served %d tweets in %d batches", batcher.tweets, batcher.batches)

    app = Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.config = config
    return app


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


def serve_model(model_uri: str, config: ServeConfig) -> None:
    """Load the classifier at model_uri, warm it up and serve it behind the contract."""
    from components.model import load_classifier

    start = time.perf_counter()
    classifier = load_classifier(model_uri)
    loaded = time.perf_counter() - start
    warm = warm_up(classifier.predict_proba, sorted({1, config.max_batch_texts}))
    log.info("loaded %s in %.1f s, warmed up in %.1f s", model_uri, loaded, warm)
    run_server(classifier.predict_proba, config)
