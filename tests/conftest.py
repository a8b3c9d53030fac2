"""Shared test set-up: an isolated SENTINOVA_HOME, quiet Prefect, and the shared data files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="sentinova-test-"))
os.environ.setdefault("SENTINOVA_HOME", str(_SESSION_HOME / "home"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_SESSION_HOME / 'mlflow.db'}")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED", REPO.parent / "shared")).resolve()
TWEETS = SHARED / "data" / "tweets"
TRAIN_FILE = TWEETS / "semeval2017_sentiment_train.jsonl"
VALIDATION_FILE = TWEETS / "tweeteval_sentiment_validation.jsonl"
AIRLINE_FILE = TWEETS / "airline_sentiment.jsonl"
SUITE_FILE = SHARED / "data" / "checklist" / "sentiment_suite.json"


def sample_lines(source: Path, target: Path, n: int, every: int = 1) -> Path:
    """Write every `every`-th of the first n*every lines of a shared file to target."""
    with source.open(encoding="utf-8") as handle, target.open("w", encoding="utf-8") as out:
        for number, line in enumerate(handle):
            if number >= n * every:
                break
            if number % every == 0:
                out.write(line)
    return target


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; the tests fail clearly when it is missing."""
    if not TRAIN_FILE.is_file():
        pytest.fail(f"shared data not found at {SHARED}: set SHARED=/path/to/shared")
    return SHARED


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it takes ~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def session_dir() -> Path:
    """A scratch folder that lives for the whole test session."""
    return _SESSION_HOME


def read_jsonl(path: Path) -> list[dict]:
    """Return the JSON objects of a JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
