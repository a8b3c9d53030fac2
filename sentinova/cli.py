"""The `sentinova` command: run the main job, each flow alone, and batch prediction."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from sentinova.settings import get_settings

app = typer.Typer(help="Sentinova: tweets in, a tested sentiment classifier served out.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

InputFiles = Annotated[list[str], typer.Option(
    "--input", "-i",
    help="Tweet file (snscrape-style JSONL or CSV), or snscrape:QUERY; repeatable.")]
Validation = Annotated[Path, typer.Option(
    help="Labelled JSONL for model selection and the headline figures.")]
ExtraEval = Annotated[Optional[list[Path]], typer.Option(
    "--extra-eval", help="Further labelled JSONL to evaluate on (e.g. airline); repeatable.")]
Suite = Annotated[Optional[str], typer.Option(
    help="Behavioural suite JSON (sentiment-behavioral-suite/1); default: the built-in tests.")]
Labeller = Annotated[str, typer.Option(help="Weak labeller for unlabelled tweets: textblob|vader.")]
Epochs = Annotated[Optional[int], typer.Option(help="Training epochs (the best is kept).")]
MaxRows = Annotated[Optional[int], typer.Option(help="Train on a seeded sample of this many rows.")]
Checkpoint = Annotated[Optional[str], typer.Option(
    help="Tokenizer and warm-start source: auto (bundled all-MiniLM-L6-v2), none (train "
         "WordPiece on the tweets), a local BERT folder, or a hub name when online.")]
Seed = Annotated[Optional[int], typer.Option(help="Random seed.")]
Augmentation = Annotated[Optional[float], typer.Option(
    help="Template augmentation pairs per training tweet, 0 to 5 (negation, contrast, "
         "identity statements; default 0.4, 0 for none).")]


class _WithoutTraceback(logging.Formatter):
    """A console formatter that prints a log record's message but not its traceback."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        # Hidden for this handler only: the Prefect API handler still stores the traceback.
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def _quiet_prefect_tracebacks() -> None:
    """Keep flow and task tracebacks off the terminal unless SENTINOVA_DEBUG is set.

    A failed command ends with one line saying why; the traceback stays in the flow run's logs
    in Prefect, and SENTINOVA_DEBUG=1 prints it here too.
    """
    if os.environ.get("SENTINOVA_DEBUG"):
        return
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in
                                       list(logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if (isinstance(handler, PrefectConsoleHandler)
                    and not isinstance(handler.formatter, _WithoutTraceback)):
                handler.setFormatter(_WithoutTraceback(handler.formatter))


def _train_config(epochs: int | None, max_rows: int | None, checkpoint: str | None,
                  seed: int | None, augmentation_ratio: float | None = None):
    from components.train_config import TrainConfig

    overrides = {"epochs": epochs, "max_rows": max_rows, "checkpoint": checkpoint, "seed": seed,
                 "augmentation_ratio": augmentation_ratio}
    return TrainConfig(**{k: v for k, v in overrides.items() if v is not None})


def _require_files(paths: list) -> None:
    for path in paths:
        if not str(path).startswith("snscrape:") and not Path(path).is_file():
            raise FileNotFoundError(f"file not found: {path}")


def _print_training(report) -> None:
    from rich.console import Console
    from rich.table import Table

    from components.evaluate import results_table

    rows = results_table(report.evaluations)
    table = Table(title="Evaluation (percent)")
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "data" else "right")
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console = Console()
    console.print(table)
    if report.behaviour_mean_failure_rate is not None:
        console.print(f"behavioural mean failure rate: "
                      f"{100 * report.behaviour_mean_failure_rate:.1f}% "
                      f"(report: {report.behaviour_report})")
    console.print(f"promotion gate: {report.gate_summary}")
    champion = " (champion)" if report.promoted else (
        f" (champion stays version {report.champion_version})")
    console.print(f"registered model: {report.model.uri}{champion}")


@app.command()
def run(inputs: InputFiles, validation: Validation, extra_eval: ExtraEval = None,
        suite: Suite = None, labeller: Labeller = "textblob", epochs: Epochs = None,
        max_rows: MaxRows = None, checkpoint: Checkpoint = None, seed: Seed = None,
        augmentation_ratio: Augmentation = None) -> None:
    """Run the main job: the ETL flow, then the training flow; print figures and the model URI."""
    _require_files([*inputs, validation, *(extra_eval or []), *([suite] if suite else [])])
    # Checked before Prefect and TensorFlow start, so a bad option fails at once.
    config = _train_config(epochs, max_rows, checkpoint, seed, augmentation_ratio)
    from flows.pipeline import pipeline_flow
    _quiet_prefect_tracebacks()

    report = pipeline_flow(inputs=inputs, validation=str(validation),
                           extra_eval=[str(p) for p in extra_eval or []], suite=suite,
                           labeller=labeller, config=config)
    typer.echo(f"ETL: {report.etl.loaded} loaded, {report.etl.duplicates} duplicates skipped, "
               f"{report.etl.quarantined} quarantined")
    _print_training(report.training)


@app.command()
def etl(inputs: InputFiles, labeller: Labeller = "textblob",
        positive_above: Annotated[Optional[float], typer.Option(
            help="Polarity above which a weak label is positive.")] = None,
        negative_below: Annotated[Optional[float], typer.Option(
            help="Polarity below which a weak label is negative.")] = None) -> None:
    """Run the ETL flow: ingest, normalise, label, validate and load tweets into the warehouse."""
    _require_files(inputs)
    from flows.etl import etl_flow
    _quiet_prefect_tracebacks()

    report = etl_flow(inputs=inputs, labeller=labeller, positive_above=positive_above,
                      negative_below=negative_below)
    typer.echo(f"{report.loaded} loaded, {report.duplicates} duplicates skipped, "
               f"{report.quarantined} quarantined; {report.total_rows} rows in "
               f"{report.warehouse}.{report.table}")


@app.command()
def train(validation: Validation, extra_eval: ExtraEval = None, suite: Suite = None,
          epochs: Epochs = None, max_rows: MaxRows = None, checkpoint: Checkpoint = None,
          seed: Seed = None, augmentation_ratio: Augmentation = None) -> None:
    """Run the training flow on the warehouse's tweets and register the model."""
    _require_files([validation, *(extra_eval or []), *([suite] if suite else [])])
    # Checked before Prefect and TensorFlow start, so a bad option fails at once.
    config = _train_config(epochs, max_rows, checkpoint, seed, augmentation_ratio)
    from flows.training import training_flow
    _quiet_prefect_tracebacks()

    report = training_flow(validation=str(validation),
                           extra_eval=[str(p) for p in extra_eval or []], suite=suite,
                           config=config)
    _print_training(report)


@app.command()
def predict(input: Annotated[Path, typer.Option(
                "--input", "-i", help="JSONL with text or rawContent.")],
            output: Annotated[Path, typer.Option("--output", "-o", help="JSONL to write.")],
            model: Annotated[Optional[str], typer.Option(
                help="MLflow model URI or model folder; default: the registry's champion.")] = None,
            ) -> None:
    """Predict a label and the three class probabilities for every line of a JSONL file."""
    import signal
    import time

    from components.model import load_classifier
    from components.predict import predict_file

    # A terminated run unwinds like Ctrl-C, so predict_file can remove its unfinished output.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = get_settings()
    # An empty --model is a mistake to report, not a request for the champion.
    champion = f"models:/{settings.model_name}@{settings.champion_alias}"
    uri = model if model is not None else champion
    started = time.perf_counter()
    classifier = load_classifier(uri)
    loaded = time.perf_counter() - started
    report = predict_file(classifier, str(input), str(output))
    lines = f"{report.lines} line{'' if report.lines == 1 else 's'}"
    typer.echo(f"{lines} -> {report.output} ({report.errors} unreadable) in "
               f"{report.seconds:.2f} s, {report.tweets_per_second:,.0f} tweets/s; the model "
               f"loaded in {loaded:.1f} s before that", err=True)
    if not report.predicted:
        raise RuntimeError(f"no line of {input} held a tweet text" + (
            f" (see the error lines in {report.output})" if report.lines else ": it is empty"))


def _register_commands() -> None:
    from sentinova import cli_ops, cli_serving

    cli_serving.register(app)
    cli_ops.register(app)


_register_commands()


def main() -> None:
    """Entry point: run the command; a failure exits non-zero with a one-line reason."""
    try:
        # Without standalone mode, click returns a command's exit code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: aborted", err=True)
        sys.exit(130)
    except Exception as error:  # the one place every failure becomes a one-line reason
        import click

        if isinstance(error, click.exceptions.ClickException):
            error.show()
            sys.exit(error.exit_code)
        from pydantic import ValidationError

        if isinstance(error, ValidationError):
            reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                               for e in error.errors())
        else:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        typer.echo(f"error: {type(error).__name__}: {reason}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
