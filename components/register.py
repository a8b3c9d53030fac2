"""Register stage: log the run to MLflow and register the model as a self-contained pyfunc."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from prefect import get_run_logger, task
from pydantic import BaseModel

from components.behaviour import BehaviourReport
from components.evaluate import EvalResult, confusion_png
from components.train import TrainConfig, TrainedModel, TrainingSet
from sentinova.settings import configure_mlflow, get_settings

# The pyfunc carries the code it needs, so a registry reader needs only these packages.
PYFUNC_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "keras==3.15.1", "tokenizers==0.23.3",
                       "numpy", "pandas", "pydantic-settings"]
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class RegisteredModel(BaseModel):
    """A registered model version and the MLflow run that produced it."""

    name: str
    version: int
    uri: str
    run_id: str


def behaviour_metrics(report: BehaviourReport | None) -> dict[str, float]:
    """Return the behavioural report's figures as MLflow metric names and values."""
    if report is None or report.mean_failure_rate is None:
        return {}
    metrics = {"behaviour_mean_failure_rate": float(report.mean_failure_rate)}
    for test_slug, rate in report.failure_rates().items():
        metrics[f"behaviour_failure_rate.{test_slug}"] = float(rate)
    return metrics


def eval_metrics(results: list[EvalResult]) -> dict[str, float]:
    """Return the evaluation figures as MLflow metric names (val_macro_recall, ...)."""
    metrics = {}
    for result in results:
        metrics[f"{result.name}_macro_recall"] = result.macro_recall
        metrics[f"{result.name}_macro_f1"] = result.macro_f1
        metrics[f"{result.name}_accuracy"] = result.accuracy
        for label, recall in result.per_class_recall.items():
            metrics[f"{result.name}_recall_{label}"] = recall
    return metrics


def log_and_register(trained: TrainedModel, training_set: TrainingSet, config: TrainConfig,
                     results: list[EvalResult], behaviour_path: str | None,
                     run_name: str, tags: dict[str, str] | None = None) -> RegisteredModel:
    """Log params, metrics and artifacts to one MLflow run and register the model version."""
    import mlflow
    from components.model import SentinovaPyfunc

    configure_mlflow()
    settings = get_settings()
    behaviour = (BehaviourReport.model_validate_json(Path(behaviour_path).read_text())
                 if behaviour_path else None)
    with mlflow.start_run(run_name=run_name, tags=tags or {}) as run:
        mlflow.log_params({**config.model_dump(), "tokenizer": trained.tokenizer,
                           "warm_start": trained.warm_start, "parameters": trained.parameters,
                           "data_rows": training_set.rows, "data_sha256": training_set.sha256,
                           "data_excluded_eval_rows": training_set.excluded,
                           "augmentation_pairs": trained.augmentation_pairs,
                           "data_label_counts": json.dumps(training_set.label_counts)})
        for epoch in trained.history:
            mlflow.log_metrics({"train_loss": epoch["loss"],
                                "epoch_val_macro_recall": epoch["val_macro_recall"]},
                               step=int(epoch["epoch"]))
        mlflow.log_metrics({**eval_metrics(results), **behaviour_metrics(behaviour),
                            "train_seconds": trained.train_seconds,
                            "best_epoch": trained.best_epoch})

        with tempfile.TemporaryDirectory() as scratch:
            for result in results:
                mlflow.log_artifact(confusion_png(result, f"{scratch}/confusion_{result.name}.png"),
                                    "evaluation")
            (Path(scratch) / "evaluation.json").write_text(
                json.dumps([r.model_dump() for r in results], indent=2))
            mlflow.log_artifact(f"{scratch}/evaluation.json", "evaluation")
            if behaviour_path:
                mlflow.log_artifact(behaviour_path, "behaviour")

        info = mlflow.pyfunc.log_model(
            name="model", python_model=SentinovaPyfunc(),
            artifacts={"model_dir": trained.model_dir},
            code_paths=[str(PACKAGE_ROOT / "components"), str(PACKAGE_ROOT / "sentinova")],
            pip_requirements=PYFUNC_REQUIREMENTS,
            registered_model_name=settings.model_name)

    version = int(info.registered_model_version)
    return RegisteredModel(name=settings.model_name, version=version,
                           uri=f"models:/{settings.model_name}/{version}", run_id=run.info.run_id)


@task(name="register")
def register_task(trained: TrainedModel, training_set: TrainingSet, config: TrainConfig,
                  results: list[EvalResult], behaviour_path: str | None, run_name: str,
                  tags: dict[str, str] | None = None) -> RegisteredModel:
    """Log the training run to MLflow and register its model version."""
    registered = log_and_register(trained, training_set, config, results, behaviour_path,
                                  run_name, tags)
    get_run_logger().info("registered %s (run %s)", registered.uri, registered.run_id)
    return registered
