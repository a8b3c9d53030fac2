"""The promotion gate and hand-made promote/rollback, on a real sqlite MLflow registry."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from components.promote import (
    GateConfig,
    PromotionError,
    alias_history,
    champion_version,
    compare,
    decision_markdown,
    evaluate_gate,
    log_gate_decision,
    promote,
    rollback,
    version_figures,
)
from sentinova.settings import configure_mlflow, get_settings



class ConstantSentiment(mlflow.pyfunc.PythonModel):
    """A tiny pyfunc that calls every tweet neutral; only its run's metrics matter here."""

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return ["neutral"] * len(model_input)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A SENTINOVA_HOME whose sqlite MLflow store is created once for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SENTINOVA_HOME", str(tmp_path_factory.mktemp("promote") / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        configure_mlflow()
        yield
    get_settings.cache_clear()


@pytest.fixture
def registry(home, request, monkeypatch):
    """A registered model of its own for each test, so tests share only the sqlite store."""
    name = f"sentiment-{request.node.name[5:40].replace('_', '-')}"
    monkeypatch.setenv("SENTINOVA_MODEL_NAME", name)
    get_settings.cache_clear()
    yield MlflowClient()
    get_settings.cache_clear()


def register(recall: float, mean_failure: float, **failures: float) -> int:
    """Register a version whose training run logged the given gate metrics; return it."""
    metrics = {"val_macro_recall": recall, "behaviour_mean_failure_rate": mean_failure}
    metrics |= {f"behaviour_failure_rate.{slug}": rate for slug, rate in failures.items()}
    with mlflow.start_run():
        mlflow.log_metrics(metrics)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ConstantSentiment(),
            registered_model_name=get_settings().model_name,
            pip_requirements=["mlflow"],
        )
    return int(info.registered_model_version)


def test_without_a_champion_the_first_challenger_is_promoted(registry):
    first = register(0.60, 0.40, negation=0.5)

    decision = evaluate_gate(first, GateConfig())

    assert decision.champion is None
    assert decision.promote is True
    assert "no champion yet" in decision.summary


def test_a_deliberately_worse_model_is_kept_from_becoming_champion(registry):
    champion = register(0.68, 0.30, negation=0.40)
    promote(champion, who="alice", why="first good model")
    worse = register(0.55, 0.45, negation=0.70)

    decision = evaluate_gate(worse, GateConfig(recall_margin=0.01, failure_rate_margin=0.02))
    log_gate_decision(decision)

    assert decision.promote is False
    assert decision.champion.version == champion
    by_name = {check.name: check for check in decision.checks}
    assert by_name["val_macro_recall"].passed is False
    assert by_name["val_macro_recall"].limit == pytest.approx(0.67)
    assert by_name["behaviour_mean_failure_rate"].passed is False
    assert by_name["behaviour_mean_failure_rate"].limit == pytest.approx(0.32)
    assert champion_version() == champion

    tags = registry.get_model_version(get_settings().model_name, str(worse)).tags
    assert tags["gate.decision"] == "failed"
    run = registry.get_run(decision.challenger.run_id)
    assert run.data.metrics["gate.passed"] == 0.0
    assert run.data.metrics["gate.reference.val_macro_recall"] == pytest.approx(0.68)
    assert run.data.tags["gate.champion_version"] == str(champion)


def test_a_challenger_within_both_margins_passes(registry):
    champion = register(0.68, 0.30)
    promote(champion, who="alice", why="baseline")
    close = register(0.675, 0.315)

    decision = evaluate_gate(close, GateConfig(recall_margin=0.01, failure_rate_margin=0.02))

    assert decision.promote is True
    assert [check.passed for check in decision.checks] == [True, True]


def test_a_failing_blocking_test_stops_an_otherwise_better_model(registry):
    champion = register(0.60, 0.40, negation=0.30)
    promote(champion, who="alice", why="baseline")
    better_but_blind = register(0.70, 0.20, negation=0.90)
    config = GateConfig(blocking={"negation": 0.5})

    decision = evaluate_gate(better_but_blind, config)

    assert decision.promote is False
    blocking = decision.checks[-1]
    assert blocking.name == "behaviour_failure_rate.negation"
    assert (blocking.challenger, blocking.reference, blocking.limit) == (0.90, 0.30, 0.5)
    assert "blocking test negation" in decision.summary


def test_an_unmeasured_blocking_test_fails_the_gate(registry):
    challenger = register(0.70, 0.20)

    decision = evaluate_gate(challenger, GateConfig(blocking={"sarcasm": 0.9}))

    assert decision.promote is False
    assert "sarcasm was not measured" in decision.summary


def test_missing_challenger_recall_fails_but_missing_champion_figures_do_not(registry):
    from components.promote import VersionFigures

    champion = VersionFigures(version=1, run_id=None, val_macro_recall=None,
                              behaviour_mean_failure_rate=None)
    challenger = VersionFigures(version=2, run_id=None, val_macro_recall=0.6,
                                behaviour_mean_failure_rate=0.3)
    assert compare(challenger, champion, GateConfig(), "any").promote is True

    blank = challenger.model_copy(update={"val_macro_recall": None})
    assert compare(blank, champion, GateConfig(), "any").promote is False


def test_version_figures_read_every_behavioural_failure_rate(registry):
    version = register(0.61, 0.33, negation=0.5, **{"sarcasm-irony": 0.25})

    figures = version_figures(version)

    assert figures.val_macro_recall == pytest.approx(0.61)
    assert figures.failure_rates == {"negation": 0.5, "sarcasm-irony": 0.25}


def test_promote_and_rollback_move_the_alias_and_record_who_and_why(registry):
    first, second, third = register(0.6, 0.4), register(0.62, 0.38), register(0.64, 0.36)
    promote(first, who="alice", why="first model")
    promote(second, who="bob", why="better recall")
    promote(third, who="carol", why="retrained on new tweets")

    back = rollback(who="dave", why="complaints about airline tweets")
    assert (back.version, back.previous) == (second, third)
    assert champion_version() == second
    assert rollback(who="dave", why="still bad").version == first
    with pytest.raises(PromotionError, match="no earlier champion"):
        rollback(who="dave", why="once more")

    history = alias_history()
    assert [(c.action, c.version, c.who) for c in history] == [
        ("promote", first, "alice"),
        ("promote", second, "bob"),
        ("promote", third, "carol"),
        ("rollback", second, "dave"),
        ("rollback", first, "dave"),
    ]
    name = get_settings().model_name
    tags = registry.get_model_version(name, str(third)).tags
    assert tags["promote.who"] == "carol"
    assert tags["promote.why"] == "retrained on new tweets"
    assert "rolled_back" in tags
    assert registry.get_model_version(name, str(first)).tags["rollback.why"] == "still bad"


def test_promote_refuses_unknown_versions_and_missing_reasons(registry):
    version = register(0.6, 0.4)
    with pytest.raises(PromotionError, match="no version 9"):
        promote(9, who="alice", why="typo")
    with pytest.raises(PromotionError, match="who asked and why"):
        promote(version, who="alice", why="  ")
    with pytest.raises(PromotionError, match="no champion to roll back"):
        rollback(who="alice", why="nothing there")


def test_decision_markdown_lists_every_compared_figure(registry):
    champion = register(0.68, 0.30, negation=0.4)
    promote(champion, who="alice", why="baseline")
    worse = register(0.50, 0.50, negation=0.8)

    text = decision_markdown(evaluate_gate(worse, GateConfig(blocking={"negation": 0.6})))

    assert "KEEP CHAMPION" in text
    assert "| val_macro_recall | 0.5000 | 0.6800 | 0.6700 | FAIL" in text
    assert "| behaviour_failure_rate.negation | 0.8000 | 0.4000 | 0.6000 | FAIL" in text


def test_gate_task_promotes_a_better_challenger_and_writes_an_artifact(registry,
                                                                       prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from components.promote import gate_task

    champion = register(0.60, 0.40)
    promote(champion, who="alice", why="baseline")
    better, worse = register(0.66, 0.35), register(0.40, 0.60)

    @flow
    def gate_both() -> tuple[bool, bool]:
        return gate_task(worse).promote, gate_task(better).promote

    assert gate_both() == (False, True)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    assert champion_version() == better
    assert any(a.key == "promotion-gate" and "PROMOTE" in a.data for a in artifacts)
    assert alias_history()[-1].who == "promotion-gate"


def test_cli_promote_and_rollback_report_the_alias_move(registry):
    import typer
    from typer.testing import CliRunner

    from sentinova.cli_serving import register as register_commands

    app = typer.Typer()
    register_commands(app)
    first, second = register(0.6, 0.4), register(0.65, 0.35)
    runner = CliRunner()

    promoted = runner.invoke(app, ["promote", "--version", str(first), "--why", "baseline",
                                   "--who", "erin"])
    runner.invoke(app, ["promote", "--version", str(second), "--why", "better"])
    rolled = runner.invoke(app, ["rollback", "--why", "airline complaints", "--who", "erin"])
    missing = runner.invoke(app, ["promote", "--version", "42", "--why", "typo"])
    history = len(alias_history())
    again = runner.invoke(app, ["promote", "--version", str(first), "--why", "twice"])

    assert promoted.exit_code == 0 and f"version {first} (was None), by erin" in promoted.output
    assert rolled.exit_code == 0 and f"rolled back to version {first}" in rolled.output
    assert isinstance(missing.exception, PromotionError)
    assert champion_version() == first
    assert again.exit_code == 0 and "already the champion; nothing changed" in again.output
    assert len(alias_history()) == history


def test_a_champion_measured_on_other_files_is_measured_again_on_the_challengers(
        registry, tmp_path, shared_data):
    from components.behaviour import resolve_suite, run_suite
    from components.evaluate import evaluate_model
    from components.model import load_classifier
    from components.promote import SUITE_TAG, VALIDATION_TAG, measured_on_tags
    from tests.conftest import VALIDATION_FILE, sample_lines
    from tests.flows.test_deploy_flow import build_tiny_model, register_model_dir

    model_dir = build_tiny_model(tmp_path / "model")
    validation = str(sample_lines(VALIDATION_FILE, tmp_path / "val.jsonl", 200))
    # The champion logged figures from another suite (0.01); the challenger from the built-in.
    versions = [
        register_model_dir(model_dir, {"val_macro_recall": 0.9,
                                       "behaviour_mean_failure_rate": failure}, tags)
        for tags, failure in (({VALIDATION_TAG: "elsewhere", SUITE_TAG: "other-suite"}, 0.01),
                              (measured_on_tags(validation, None), 0.30))]
    promote(versions[0], who="test", why="first")

    decision = evaluate_gate(versions[1], GateConfig(), validation=validation, suite=None)

    champion = decision.champion
    classifier = load_classifier(str(model_dir))
    assert champion.remeasured and champion.version == versions[0]
    assert champion.val_macro_recall == pytest.approx(
        evaluate_model(classifier.predict, [validation])[0].macro_recall)
    assert champion.behaviour_mean_failure_rate == pytest.approx(
        run_suite(resolve_suite(None), classifier.predict_proba).mean_failure_rate)
    assert "measured again" in decision_markdown(decision)
    # Without the challenger's files the logged figures are compared, as before.
    assert not evaluate_gate(versions[1], GateConfig()).champion.remeasured
