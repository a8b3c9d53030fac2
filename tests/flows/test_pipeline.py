"""The main job end to end on a few thousand real tweets, as real Prefect flow runs."""

import json

import mlflow
import pytest
from mlflow import MlflowClient

from components.train import TrainConfig
from sentinova.settings import configure_mlflow, get_settings
from tests.conftest import (AIRLINE_FILE, SUITE_FILE, TRAIN_FILE, VALIDATION_FILE,
                            sample_lines)


@pytest.fixture(scope="module")
def pipeline_run(prefect_harness, shared_data, session_dir):
    from flows.pipeline import pipeline_flow

    work = session_dir / "e2e"
    work.mkdir(exist_ok=True)
    train = sample_lines(TRAIN_FILE, work / "semeval_sample.jsonl", 4000, every=12)
    airline = sample_lines(AIRLINE_FILE, work / "airline_sample.jsonl", 1500, every=9)
    with (work / "semeval_sample.jsonl").open("a") as handle:
        handle.write("{broken json\n")
    config = TrainConfig(epochs=1, lstm_units=32)
    report = pipeline_flow(inputs=[str(train)], validation=str(VALIDATION_FILE),
                           extra_eval=[str(airline)], suite=str(SUITE_FILE), config=config)
    return report, train, work


def test_etl_loads_every_good_row_once_and_quarantines_the_broken_line(pipeline_run):
    report, train, _ = pipeline_run
    assert (report.etl.rows_read, report.etl.loaded, report.etl.quarantined) == (4001, 4000, 1)

    from flows.etl import etl_flow

    again = etl_flow(inputs=[str(train)])
    assert (again.loaded, again.duplicates, again.total_rows) == (0, 4000, 4000)


def test_training_beats_chance_and_reports_every_figure(pipeline_run):
    training = pipeline_run[0].training
    figures = {result.name: result for result in training.evaluations}
    assert set(figures) == {"val", "airline"}
    assert figures["val"].rows == 2000 and figures["airline"].rows == 1500
    # One epoch on 4,000 tweets: well above the 33.3 of chance, far below the full job.
    assert figures["val"].macro_recall > 0.45
    assert figures["airline"].macro_recall > 0.40
    assert sum(map(sum, figures["val"].confusion)) == 2000
    assert 0.0 < training.behaviour_mean_failure_rate < 1.0
    assert training.train_rows == 4000


def test_the_first_registered_version_is_champion_with_its_run_logged(pipeline_run):
    training = pipeline_run[0].training
    settings = get_settings()
    configure_mlflow()
    client = MlflowClient()
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert int(champion.version) == training.model.version == 1
    assert training.promoted and training.champion_version == 1
    run = client.get_run(training.model.run_id)
    assert run.data.metrics["val_macro_recall"] == pytest.approx(
        training.evaluations[0].macro_recall)
    assert "airline_macro_recall" in run.data.metrics
    assert "behaviour_mean_failure_rate" in run.data.metrics
    assert any(k.startswith("behaviour_failure_rate.") for k in run.data.metrics)
    assert run.data.params["data_rows"] == "4000"
    # Template augmentations, 0.4 per tweet by default, are counted apart from the data.
    assert run.data.params["augmentation_pairs"] == "1600"
    assert len(run.data.params["data_sha256"]) == 64
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/confusion_val.png" in artifacts


def test_the_registered_pyfunc_predicts_labels_and_probabilities_from_raw_text(pipeline_run):
    configure_mlflow()
    model = mlflow.pyfunc.load_model(f"models:/{get_settings().model_name}@champion")
    frame = model.predict(["I love this so much!", "@united lost my bag &amp; no help"])
    assert list(frame.columns) == ["label", "p_negative", "p_neutral", "p_positive"]
    assert frame["label"].isin(["negative", "neutral", "positive"]).all()
    assert frame[["p_negative", "p_neutral", "p_positive"]].sum(axis=1).round(4).eq(1).all()


def test_cli_predict_writes_a_line_with_probabilities_for_every_input(pipeline_run, tmp_path):
    from typer.testing import CliRunner

    from sentinova.cli import app

    _, train, _ = pipeline_run
    source = sample_lines(train, tmp_path / "in.jsonl", 50)
    result = CliRunner().invoke(app, ["predict", "--input", str(source),
                                      "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output[-2000:]
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 50
    assert all(len(line["probs"]) == 3 for line in lines)


def test_the_model_is_kept_once_in_the_registry_not_again_under_runs(pipeline_run):
    runs = get_settings().home / "runs"
    assert list(runs.glob("*/training.parquet"))
    assert not list(runs.glob("*/model"))
