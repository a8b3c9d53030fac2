"""The main job: the ETL flow, then the training flow, as subflows of one run."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow
from pydantic import BaseModel

from components.promote import GateConfig
from components.train import TrainConfig
from flows.etl import ETLReport, etl_flow
from flows.training import TrainingReport, dataset_label, training_flow


class PipelineReport(BaseModel):
    """What the main job loaded and what it trained and registered."""

    etl: ETLReport
    training: TrainingReport


def _run_name() -> str:
    from prefect.runtime import flow_run

    inputs = flow_run.parameters.get("inputs") or ["tweets"]
    return f"pipeline-{datetime.now(timezone.utc):%Y-%m-%d}-{dataset_label(str(inputs[0]))}"


@flow(name="pipeline", flow_run_name=_run_name, log_prints=True)
def pipeline_flow(inputs: list[str], validation: str, extra_eval: list[str] | None = None,
                  suite: str | None = None, labeller: str = "textblob",
                  config: TrainConfig | None = None,
                  gate: GateConfig | None = None) -> PipelineReport:
    """Load the tweet files into the warehouse, then train and register a model on them."""
    etl = etl_flow(inputs=inputs, labeller=labeller)
    training = training_flow(validation=validation, extra_eval=extra_eval, suite=suite,
                             config=config, gate=gate, dataset=dataset_label(inputs[0]))
    return PipelineReport(etl=etl, training=training)
