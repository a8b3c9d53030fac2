"""Batch prediction: JSONL tweets in, one label and three probabilities a line out, in order."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
from pydantic import BaseModel

from sentinova.settings import LABELS

TEXT_FIELDS = ("text", "rawContent")
# Files saved by some Windows tools start with a byte-order mark; it is not part of the JSON.
UTF8_BOM = b"\xef\xbb\xbf"


class PredictionReport(BaseModel):
    """How a prediction run went."""

    output: str
    lines: int
    predicted: int
    errors: int
    seconds: float
    tweets_per_second: float


def _read_line(number: int, line: bytes) -> tuple[str | None, str | None]:
    """Return (text, None) for a line holding a tweet, else (None, why it holds none)."""
    if number == 1 and line.startswith(UTF8_BOM):
        line = line[len(UTF8_BOM):]
    if not line.strip():
        return None, f"line {number}: blank line"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, f"line {number}: invalid JSON"
    text = next((record[f] for f in TEXT_FIELDS
                 if isinstance(record, dict) and isinstance(record.get(f), str)), None)
    if text is None:
        return None, f"line {number}: no text or rawContent string"
    if not text.strip():
        # Nothing to read a sentiment from: a label here would be made up.
        return None, f"line {number}: empty text"
    return text, None


def _chunks(path: Path, size: int) -> Iterator[list[tuple[str | None, str | None]]]:
    """Yield lists of (text, error) read from JSONL, `size` lines at a time."""
    chunk: list[tuple[str | None, str | None]] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            chunk.append(_read_line(number, line))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _tokenised_chunks(classifier, path: Path, size: int
                      ) -> Iterator[tuple[list[tuple[str | None, str | None]], list[list[int]]]]:
    """Yield (chunk, token ids of its texts), read and tokenised one chunk ahead in a thread."""
    # Tokenising is Rust that releases the GIL and the folded pass is NumPy that does too, so
    # reading chunk k + 1 overlaps predicting chunk k; two chunks in flight bound the memory.
    ready: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def hand_over(item) -> bool:
        """Queue the item unless the consumer has stopped; return whether it was queued."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        """Read and tokenise every chunk, then queue None, or the error that stopped it."""
        try:
            for chunk in _chunks(path, size):
                texts = [text for text, _ in chunk if text is not None]
                if not hand_over((chunk, classifier.token_ids(texts))):
                    return
            hand_over(None)
        except BaseException as error:  # handed to the consumer, which raises it
            hand_over(error)

    reader = threading.Thread(target=produce, name="sentinova-tokenise", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _prediction_lines(chunk: list[tuple[str | None, str | None]], probs: np.ndarray) -> bytes:
    """Return the output lines of one chunk: a prediction or an error for each input line."""
    rounded = probs.astype(np.float64).round(5)
    labels = rounded.argmax(axis=1).tolist()
    rows = iter(zip(rounded.tolist(), labels))
    lines = []
    for text, error in chunk:
        if error is not None:
            lines.append(orjson.dumps({"text": None, "error": error}))
            continue
        p, label = next(rows)
        lines.append(orjson.dumps({"text": text, "label": LABELS[label], "probs": p}))
    lines.append(b"")
    return b"\n".join(lines)


def predict_file(classifier, input_path: str, output_path: str,
                 chunk_size: int = 8192) -> PredictionReport:
    """Write a prediction line for every input line; memory stays bounded by chunk_size."""
    source, target = Path(input_path), Path(output_path)
    if source.is_dir():
        raise IsADirectoryError(f"input must be a JSONL file, not the folder {source}")
    if not source.is_file():
        raise FileNotFoundError(f"input file not found: {source}")
    if target.is_dir():
        raise IsADirectoryError(f"output must be a file path, not the folder {target}")
    if target.exists() and target.resolve() == source.resolve():
        raise ValueError(f"output {target} is the input file: it would be overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")

    started = time.perf_counter()
    lines = predicted = 0
    try:
        with partial.open("wb") as out:
            for chunk, ids in _tokenised_chunks(classifier, source, chunk_size):
                probs = classifier.predict_ids(ids)
                out.write(_prediction_lines(chunk, probs))
                lines += len(chunk)
                predicted += len(ids)
    except BaseException:
        # Interrupted or failed: no half-written file is left behind, not even the .partial.
        partial.unlink(missing_ok=True)
        raise
    # Written whole or not at all: the output appears only once every line is in it.
    partial.replace(target)
    seconds = time.perf_counter() - started
    return PredictionReport(output=str(target), lines=lines, predicted=predicted,
                            errors=lines - predicted, seconds=round(seconds, 3),
                            tweets_per_second=round(lines / seconds if seconds else 0.0, 1))
