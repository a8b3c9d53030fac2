"""ETL flow: ingest -> normalise -> label -> validate -> load."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from components.ingest import ingest_task
from components.label import LabellerConfig, label_task
from components.normalise_stage import normalise_task
from components.validate import validate_task
from components.warehouse import load_task
from sentinova.settings import get_settings


class ETLReport(BaseModel):
    """The counts of one ETL run: loaded, skipped as duplicates, quarantined."""

    inputs: list[str]
    rows_read: int
    loaded: int
    duplicates: int
    quarantined: int
    warehouse: str
    table: str
    total_rows: int


def _run_name() -> str:
    from prefect.runtime import flow_run

    inputs = flow_run.parameters.get("inputs") or ["tweets"]
    stem = Path(str(inputs[0])).stem.split("_")[0]
    return f"etl-{datetime.now(timezone.utc):%Y-%m-%d}-{stem}"


@flow(name="etl", flow_run_name=_run_name, log_prints=True)
def etl_flow(inputs: list[str], labeller: Literal["textblob", "vader"] = "textblob",
             positive_above: float | None = None,
             negative_below: float | None = None) -> ETLReport:
    """Load tweet files into the warehouse; unusable rows are quarantined with their reason."""
    config = LabellerConfig.for_labeller(labeller)
    overrides = {"positive_above": positive_above, "negative_below": negative_below}
    config = LabellerConfig(**{**config.model_dump(),
                               **{k: v for k, v in overrides.items() if v is not None}})

    staging = get_settings().home.resolve() / "staging" / uuid.uuid4().hex[:12]
    staging.mkdir(parents=True, exist_ok=True)

    batch = ingest_task(inputs, str(staging))
    normalised = normalise_task(batch.tweets_path, str(staging / "normalised.parquet"))
    labelled = label_task(normalised, str(staging / "labelled.parquet"), config)
    validated = validate_task(labelled, [batch.quarantine_path], str(staging))
    loaded = load_task(validated.tweets_path, validated.quarantine_path)

    report = ETLReport(inputs=inputs, rows_read=batch.rows + batch.quarantined,
                       loaded=loaded.loaded,
                       duplicates=loaded.duplicates + validated.duplicates_in_batch,
                       quarantined=validated.quarantined, warehouse=loaded.warehouse,
                       table=loaded.table, total_rows=loaded.total_rows)
    create_table_artifact(
        key="etl-counts",
        table=[{"rows read": report.rows_read, "loaded": report.loaded,
                "duplicates skipped": report.duplicates, "quarantined": report.quarantined,
                "rows in warehouse": report.total_rows}],
        description=f"ETL of {', '.join(Path(p).name for p in inputs)} into {loaded.warehouse}")
    get_run_logger().info("ETL done: %s", report.model_dump_json())
    return report
