"""Validate stage: split a labelled batch into loadable rows and quarantined rows with reasons."""

from __future__ import annotations

import json

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from components.ingest import QUARANTINE_COLUMNS
from sentinova.settings import LABELS

MAX_TEXT_CHARS = 2000


class ValidatedBatch(BaseModel):
    """The loadable rows and all quarantined rows of a batch, by path, with their counts."""

    tweets_path: str
    quarantine_path: str
    valid: int
    quarantined: int
    duplicates_in_batch: int


def _reason(row: pd.Series) -> str | None:
    if not row["text"]:
        return "no text after normalisation"
    if len(row["text"]) > MAX_TEXT_CHARS:
        return f"text longer than {MAX_TEXT_CHARS} characters"
    if row["label"] not in LABELS:
        return f"unknown label {row['label']!r}"
    return None


def validate_batch(tweets_path: str, quarantine_paths: list[str], out_dir: str) -> ValidatedBatch:
    """Write valid.parquet and quarantine.parquet under out_dir and return what went where."""
    tweets = pd.read_parquet(tweets_path)
    reasons = tweets.apply(_reason, axis=1) if len(tweets) else pd.Series(dtype=object)
    bad = reasons.notna()

    rejected = tweets[bad]
    new_quarantine = pd.DataFrame({
        "source_file": rejected["source_file"],
        "line": rejected["line"],
        "reason": reasons[bad],
        "raw": [json.dumps({"id": r.id, "text": r.raw_text, "label": r.label}, ensure_ascii=False)
                for r in rejected.itertuples()],
    }, columns=QUARANTINE_COLUMNS)
    quarantine = pd.concat([pd.read_parquet(p) for p in quarantine_paths] + [new_quarantine],
                           ignore_index=True)

    valid = tweets[~bad]
    # The first occurrence of an id wins; later ones are duplicates, reported, not loaded.
    deduplicated = valid.drop_duplicates(subset="id", keep="first")

    valid_path = f"{out_dir}/valid.parquet"
    quarantine_path = f"{out_dir}/quarantine.parquet"
    deduplicated.to_parquet(valid_path, index=False)
    quarantine.to_parquet(quarantine_path, index=False)
    return ValidatedBatch(tweets_path=valid_path, quarantine_path=quarantine_path,
                          valid=len(deduplicated), quarantined=len(quarantine),
                          duplicates_in_batch=len(valid) - len(deduplicated))


@task(name="validate")
def validate_task(tweets_path: str, quarantine_paths: list[str], out_dir: str) -> ValidatedBatch:
    """Validate the labelled batch; unusable rows join the quarantine with their reason."""
    batch = validate_batch(tweets_path, quarantine_paths, out_dir)
    get_run_logger().info("validated: %d valid, %d quarantined, %d repeated ids in the batch",
                          batch.valid, batch.quarantined, batch.duplicates_in_batch)
    return batch
