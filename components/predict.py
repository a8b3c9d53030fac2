"""Batch prediction: JSONL tweets in, one label and three probabilities a line out, in order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from pydantic import BaseModel

from sentinova.settings import LABELS

TEXT_FIELDS = ("text", "rawContent")


class PredictionReport(BaseModel):
    """How a prediction run went."""

    output: str
    lines: int
    predicted: int
    errors: int
    seconds: float
    tweets_per_second: float


def _chunks(path: Path, size: int) -> Iterator[list[tuple[str | None, str | None]]]:
    """Yield lists of (text, error) read from JSONL, `size` lines at a time."""
    chunk: list[tuple[str | None, str | None]] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = orjson.loads(line)
                text = next((record[f] for f in TEXT_FIELDS
                             if isinstance(record, dict) and isinstance(record.get(f), str)),
                            None)
                chunk.append((text, None) if text is not None
                             else (None, f"line {number}: no text or rawContent field"))
            except orjson.JSONDecodeError:
                chunk.append((None, f"line {number}: invalid JSON"))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def predict_file(classifier, input_path: str, output_path: str,
                 chunk_size: int = 8192) -> PredictionReport:
    """Write a prediction line for every input line; memory stays bounded by chunk_size."""
    source, target = Path(input_path), Path(output_path)
    if not source.is_file():
        raise FileNotFoundError(f"input file not found: {source}")
    if target.is_dir():
        raise IsADirectoryError(f"output must be a file path, not the folder {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")

    started = time.perf_counter()
    lines = predicted = errors = 0
    with partial.open("wb") as out:
        for chunk in _chunks(source, chunk_size):
            texts = [text for text, _ in chunk if text is not None]
            probs = (classifier.predict_proba(texts).astype(float).round(5).tolist()
                     if texts else [])
            rows = iter(probs)
            for text, error in chunk:
                if error is not None:
                    out.write(orjson.dumps({"text": None, "error": error}) + b"\n")
                    errors += 1
                    continue
                p = next(rows)
                label = LABELS[max(range(len(LABELS)), key=p.__getitem__)]
                out.write(orjson.dumps({"text": text, "label": label, "probs": p}) + b"\n")
                predicted += 1
            lines += len(chunk)
    # Written whole or not at all: a crash leaves only the .partial file behind.
    partial.replace(target)
    seconds = time.perf_counter() - started
    return PredictionReport(output=str(target), lines=lines, predicted=predicted, errors=errors,
                            seconds=round(seconds, 3),
                            tweets_per_second=round(lines / seconds if seconds else 0.0, 1))
