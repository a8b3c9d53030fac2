"""Ingest stage: read tweets from snscrape-style JSONL, CSV or a live snscrape query."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

TEXT_FIELDS = ("rawContent", "text", "content", "renderedContent", "tweet")
TWEET_COLUMNS = ["id", "raw_text", "label", "date", "lang", "source", "source_file", "line"]
QUARANTINE_COLUMNS = ["source_file", "line", "reason", "raw"]


class StagedBatch(BaseModel):
    """A batch of tweets staged as parquet files, with its quarantined rows beside it."""

    tweets_path: str
    quarantine_path: str
    source_files: list[str]
    rows: int
    quarantined: int


class IngestError(ValueError):
    """A source that cannot be read at all (missing file, unknown format)."""


def _text_of(record: dict[str, Any]) -> str | None:
    for field in TEXT_FIELDS:
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _tweet_id(record: dict[str, Any], text: str) -> str:
    value = record.get("id") or record.get("tweet_id") or record.get("id_str")
    if value not in (None, ""):
        return str(value)
    # Sources without ids are keyed by their text, so a re-run still adds nothing.
    return "text-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def _row(record: dict[str, Any], source_file: str, line: int) -> dict[str, Any] | str:
    """Return a tweet row, or the reason the record cannot be used."""
    if not isinstance(record, dict):
        return "record is not a JSON object"

    text = _text_of(record)
    if text is None:
        return "no tweet text"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "tweet text is not valid Unicode (a lone surrogate escape)"

    label = record.get("label", record.get("sentiment"))
    return {
        "id": _tweet_id(record, text),
        "raw_text": text,
        "label": None if label in (None, "") else str(label),
        "date": None if record.get("date") in (None, "") else str(record["date"]),
        "lang": record.get("lang"),
        "source": record.get("source"),
        "source_file": source_file,
        "line": line,
    }


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | str, str]]:
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, f"invalid JSON: {error.msg} at column {error.colno}", line
                continue
            # A string here would read as a quarantine reason: name the problem instead.
            yield number, (record if isinstance(record, dict)
                           else "record is not a JSON object"), line


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | str, str]]:
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not set(reader.fieldnames) & set(TEXT_FIELDS):
            raise IngestError(f"{path}: CSV needs a header with one of {', '.join(TEXT_FIELDS)}")
        for record in reader:
            # csv counts physical lines, so multi-line quoted tweets keep their true line.
            raw = json.dumps(record, ensure_ascii=False)
            if None in record:
                yield reader.line_num, "row has more fields than the header", raw
            else:
                yield reader.line_num, record, raw


def read_tweets(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (tweet rows, quarantined rows) read from a JSONL or CSV file."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"input file not found: {path}")

    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        records = _read_jsonl(path)
    elif suffix in (".csv", ".tsv"):
        records = _read_csv(path)
    else:
        raise IngestError(f"{path}: unknown format {suffix!r} (use .jsonl or .csv)")

    rows, quarantined = [], []
    source_file = str(path.resolve())
    for line, record, raw in records:
        row = record if isinstance(record, str) else _row(record, source_file, line)
        if isinstance(row, str):
            quarantined.append({"source_file": source_file, "line": line, "reason": row,
                                "raw": raw.rstrip("\n")[:2000]})
        else:
            rows.append(row)
    return (pd.DataFrame(rows, columns=TWEET_COLUMNS),
            pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS))


def scrape_query(query: str, limit: int, out_dir: Path) -> Path:
    """Run a live snscrape search into a JSONL file and return its path."""
    if shutil.which("snscrape") is None:
        raise IngestError("snscrape is not installed: pip install snscrape, or ingest a file")
    out = out_dir / f"snscrape-{hashlib.sha1(query.encode()).hexdigest()[:10]}.jsonl"
    command = ["snscrape", "--jsonl", "--max-results", str(limit), "twitter-search", query]
    with out.open("w", encoding="utf-8") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.PIPE, text=True,
                                timeout=600)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise IngestError(f"snscrape query failed (network or API unavailable): {reason}")
    return out


def stage_files(inputs: list[str], staging_dir: Path) -> StagedBatch:
    """Read every input into one staged parquet batch under staging_dir."""
    if not inputs:
        raise IngestError("no input files given")
    staging_dir.mkdir(parents=True, exist_ok=True)

    frames, quarantines = [], []
    for source in inputs:
        if source.startswith("snscrape:"):
            source = str(scrape_query(source.removeprefix("snscrape:"), 1000, staging_dir))
        tweets, quarantined = read_tweets(source)
        frames.append(tweets)
        quarantines.append(quarantined)

    tweets = pd.concat(frames, ignore_index=True)
    quarantined = pd.concat(quarantines, ignore_index=True)
    tweets_path = staging_dir / "ingested.parquet"
    quarantine_path = staging_dir / "quarantine-ingest.parquet"
    tweets.to_parquet(tweets_path, index=False)
    quarantined.to_parquet(quarantine_path, index=False)
    return StagedBatch(tweets_path=str(tweets_path), quarantine_path=str(quarantine_path),
                       source_files=[str(Path(s).resolve()) for s in inputs
                                     if not s.startswith("snscrape:")],
                       rows=len(tweets), quarantined=len(quarantined))


@task(name="ingest", retries=0)
def ingest_task(inputs: list[str], staging_dir: str) -> StagedBatch:
    """Stage the input files as parquet; unreadable lines go to quarantine."""
    batch = stage_files(inputs, Path(staging_dir))
    get_run_logger().info("ingested %d rows from %d file(s), %d quarantined",
                          batch.rows, len(inputs), batch.quarantined)
    return batch
