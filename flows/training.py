"""Training flow: extract -> train -> evaluate -> behaviour -> register -> promotion gate."""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel

from components.behaviour import behaviour_task
from components.evaluate import EvalResult, evaluate_task, results_table
from components.promote import GateConfig, gate_task, measured_on_tags
from components.register import RegisteredModel, register_task
from components.train import TrainConfig, extract_task, train_task
from sentinova.settings import get_settings


class TrainingReport(BaseModel):
    """The outcome of a training run: figures and the registered model."""

    model: RegisteredModel
    promoted: bool
    champion_version: int | None
    gate_summary: str
    evaluations: list[EvalResult]
    behaviour_mean_failure_rate: float | None
    behaviour_report: str
    train_rows: int
    train_seconds: float


def dataset_label(path: str) -> str:
    """Return a short name for a data file, used in run names (semeval, airline, ...)."""
    stem = Path(path).stem.lower()
    return re.sub(r"[^a-z]+", "", re.split(r"[_\-.]", stem)[0]) or "tweets"


def _run_name() -> str:
    from prefect.runtime import flow_run

    label = flow_run.parameters.get("dataset") or "warehouse"
    return f"train-{datetime.now(timezone.utc):%Y-%m-%d}-{label}"


def confusion_markdown(results: list[EvalResult]) -> str:
    """Return the confusion matrices as markdown tables (rows gold, columns predicted)."""
    parts = []
    for result in results:
        rows = ["| gold \\ predicted | negative | neutral | positive |", "|---|---|---|---|"]
        for label, counts in zip(("negative", "neutral", "positive"), result.confusion):
            rows.append(f"| {label} | " + " | ".join(str(c) for c in counts) + " |")
        parts.append(f"### {result.name} ({result.rows} tweets, macro recall "
                     f"{100 * result.macro_recall:.1f})\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


@flow(name="training", flow_run_name=_run_name, log_prints=True)
def training_flow(validation: str, extra_eval: list[str] | None = None,
                  suite: str | None = None, config: TrainConfig | None = None,
                  gate: GateConfig | None = None, dataset: str = "warehouse") -> TrainingReport:
    """Train, evaluate and behaviour-test a BiLSTM, register it, promote it if it passes."""
    config = config or TrainConfig()
    extra_eval = list(extra_eval or [])
    eval_files = [validation, *extra_eval]
    work = get_settings().home.resolve() / "runs" / uuid.uuid4().hex[:12]
    work.mkdir(parents=True, exist_ok=True)

    training_set = extract_task(str(work / "training.parquet"), eval_files, config.max_rows,
                                config.seed)
    trained = train_task(training_set, validation, str(work / "model"), config, suite)
    results = evaluate_task(trained.model_dir, eval_files)
    behaviour = behaviour_task(trained.model_dir, suite, str(work / "behaviour.json"))
    run_name = f"train-{datetime.now(timezone.utc):%Y-%m-%d}-{dataset}"
    registered = register_task(trained, training_set, config, results, behaviour.report_path,
                               run_name, measured_on_tags(validation, suite))
    decision = gate_task(registered.version, gate, validation=validation, suite=suite)
    # The registry now holds the model; a second 50 MB copy under runs/ would only take space.
    shutil.rmtree(trained.model_dir, ignore_errors=True)

    create_table_artifact(key="evaluation", table=results_table(results),
                          description=f"Evaluation of {registered.uri}")
    create_markdown_artifact(key="confusion-matrix", markdown=confusion_markdown(results),
                             description=f"Confusion matrices of {registered.uri}")
    promoted = decision.promote
    champion = registered.version if promoted else (
        decision.champion.version if decision.champion else None)
    report = TrainingReport(model=registered, promoted=promoted, champion_version=champion,
                            gate_summary=decision.summary, evaluations=results,
                            behaviour_mean_failure_rate=behaviour.mean_failure_rate,
                            behaviour_report=behaviour.report_path,
                            train_rows=training_set.rows, train_seconds=trained.train_seconds)
    get_run_logger().info("training done: %s", registered.uri)
    return report
