"""The webhook: a signed notice that tweets have landed becomes a Prefect event."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger(__name__)

EVENT_NAME = "sentinova.tweets.landed"
RESOURCE_PREFIX = "sentinova.tweets."
SIGNATURE_HEADER = "X-Sentinova-Signature"
TIMESTAMP_HEADER = "X-Sentinova-Timestamp"
SECRET_ENV = "SENTINOVA_WEBHOOK_SECRET"
SECRET_BLOCK = "sentinova-webhook-secret"
DEFAULT_PORT = 8787
DEFAULT_TOLERANCE_SECONDS = 300
MIN_SECRET_LENGTH = 16
MAX_BODY_BYTES = 64 * 1024


class WebhookError(RuntimeError):
    """The webhook cannot start; the message says why."""


class TweetsLanded(BaseModel):
    """A notice that a file of tweets has landed: where it is and how many rows it holds."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="Path or URI of the tweet file")
    rows: int = Field(ge=1, strict=True, description="Rows in the file")
    source: str | None = Field(default=None, description="Who or what wrote the file")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        # A worker on another directory (or host) would read a relative path somewhere else.
        if "://" not in value and not value.startswith("snscrape:") and not value.startswith("/"):
            raise ValueError("must be an absolute path or a URI, not a relative path")
        if any(ord(character) < 32 for character in value):
            raise ValueError("must not contain control characters")
        return value


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the signature header value: HMAC-SHA256 over `timestamp.body`, hex, prefixed."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: bytes, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Return the headers that sign a body now (or at the given Unix time)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(secret, stamp, body),
            "Content-Type": "application/json"}


def load_secret(block_name: str = SECRET_BLOCK) -> bytes:
    """Return the shared secret from SENTINOVA_WEBHOOK_SECRET, else from a Prefect Secret block."""
    value = os.environ.get(SECRET_ENV)
    if not value:
        try:
            from prefect.blocks.system import Secret

            value = Secret.load(block_name).get()
        except Exception as exc:
            raise WebhookError(f"no webhook secret: set {SECRET_ENV} or create the Prefect "
                               f"Secret block {block_name!r} ({type(exc).__name__})") from None
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        raise WebhookError(f"the webhook secret must be a string of at least "
                           f"{MIN_SECRET_LENGTH} characters")
    return value.encode()


class ReplayGuard:
    """Remembers the signatures already accepted, in sqlite, until their timestamps go stale."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS seen_signatures "
                       "(signature TEXT PRIMARY KEY, expires_at REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10.0, isolation_level=None)

    def claim(self, sig: str, expires_at: float, now: float) -> bool:
        """Record a signature; return False if it was already recorded and is not expired."""
        with self._connect() as db:
            db.execute("DELETE FROM seen_signatures WHERE expires_at < ?", (now,))
            cursor = db.execute("INSERT OR IGNORE INTO seen_signatures VALUES (?, ?)",
                                (sig, expires_at))
            return cursor.rowcount == 1

    def release(self, sig: str) -> None:
        """Forget a signature, so that a sender may retry a notice that was not delivered."""
        with self._connect() as db:
            db.execute("DELETE FROM seen_signatures WHERE signature = ?", (sig,))


def tweets_landed_event(notice: TweetsLanded, event_id: UUID):
    """Return the Prefect event that announces a landed tweet file."""
    from prefect.events import Event

    return Event(
        id=event_id,
        occurred=datetime.now(timezone.utc),
        event=EVENT_NAME,
        resource={"prefect.resource.id": f"{RESOURCE_PREFIX}{notice.path}",
                  "prefect.resource.name": Path(notice.path).name or notice.path,
                  "sentinova.path": notice.path},
        payload=notice.model_dump(),
    )


async def emit_to_prefect(event, api_url: str) -> None:
    """Send one event to the Prefect server over its events socket; raise if it is unreachable."""
    from prefect.events.clients import PrefectEventsClient

    async with PrefectEventsClient(api_url=api_url, reconnection_attempts=2) as client:
        await client.emit(event)


def _refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def create_app(secret: bytes, guard: ReplayGuard, api_url: str,
               tolerance: int = DEFAULT_TOLERANCE_SECONDS,
               clock: Callable[[], float] = time.time) -> Starlette:
    """Return the ASGI app: POST /notices takes a signed notice, GET /health says it is up."""

    async def notices(request: Request) -> JSONResponse:
        stamp = request.headers.get(TIMESTAMP_HEADER)
        sig = request.headers.get(SIGNATURE_HEADER)
        if not stamp or not sig:
            return _refuse(401, f"unsigned: {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} "
                                "headers are required")
        try:
            sent_at = int(stamp)
        except ValueError:
            return _refuse(401, f"{TIMESTAMP_HEADER} must be Unix seconds")
        now = clock()
        if abs(now - sent_at) > tolerance:
            return _refuse(401, f"stale: timestamp is {abs(now - sent_at):.0f} s away from now "
                                f"(tolerance {tolerance} s)")

        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _refuse(413, f"body over {MAX_BODY_BYTES} bytes")
        if not hmac.compare_digest(signature(secret, stamp, body), sig):
            return _refuse(401, "wrong signature")

        try:
            notice = TweetsLanded.model_validate(json.loads(body))
        except json.JSONDecodeError as exc:
            return _refuse(400, f"body is not valid JSON: {exc.msg} at {exc.pos}")
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                 for e in exc.errors())
            return _refuse(400, f"invalid notice: {problems}")

        if not guard.claim(sig, expires_at=sent_at + tolerance + 1, now=now):
            return _refuse(401, "replayed: this signature was already accepted")

        event = tweets_landed_event(notice, uuid4())
        try:
            await emit_to_prefect(event, api_url)
        except Exception as exc:
            guard.release(sig)
            logger.warning("could not emit %s to %s: %s", EVENT_NAME, api_url, exc)
            return _refuse(503, f"Prefect at {api_url} is unreachable; retry later")
        logger.info("notice for %s (%d rows) became event %s", notice.path, notice.rows,
                    event.id)
        return JSONResponse({"event_id": str(event.id), "event": EVENT_NAME,
                             "path": notice.path}, status_code=202)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/notices", notices, methods=["POST"]),
                             Route("/health", health, methods=["GET"])])


def serve(host: str, port: int, api_url: str, home: Path,
          tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> None:
    """Run the webhook until interrupted, with its replay record under `home`."""
    import uvicorn

    app = create_app(load_secret(), ReplayGuard(home / "webhook" / "seen-signatures.db"),
                     api_url, tolerance)
    logger.info("webhook on http://%s:%d/notices emits %s to %s", host, port, EVENT_NAME,
                api_url)
    uvicorn.run(app, host=host, port=port, log_level="info")
