"""Promotion: the champion/challenger gate over the MLflow registry, hand promote/rollback."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentinova.settings import configure_mlflow, get_settings

log = logging.getLogger(__name__)

RECALL = "val_macro_recall"
MEAN_FAILURE = "behaviour_mean_failure_rate"
FAILURE_PREFIX = "behaviour_failure_rate."
# Run tags naming the files a version was measured on: figures compare only on the same files.
VALIDATION_TAG = "measured_on.validation_sha256"
SUITE_TAG = "measured_on.suite_sha256"
HISTORY_PREFIX = "alias_history."


class GateConfig(BaseSettings):
    """Margins and blocking tests of the promotion gate (SENTINOVA_GATE_*)."""

    model_config = SettingsConfigDict(env_prefix="SENTINOVA_GATE_", extra="ignore")

    recall_margin: float = Field(default=0.01, ge=0)
    failure_rate_margin: float = Field(default=0.02, ge=0)
    # Behavioural test slug -> highest failure rate the challenger may have on it.
    blocking: dict[str, float] = Field(default_factory=dict)


class VersionFigures(BaseModel):
    """The figures of one registered model version that the gate compares."""

    version: int
    run_id: str | None
    val_macro_recall: float | None
    behaviour_mean_failure_rate: float | None
    failure_rates: dict[str, float] = Field(default_factory=dict)
    validation_sha256: str | None = None
    suite_sha256: str | None = None
    # True when the gate measured these figures itself, on the challenger's files.
    remeasured: bool = False


class GateCheck(BaseModel):
    """One comparison of the gate with the figures it used."""

    name: str
    challenger: float | None
    reference: float | None
    limit: float | None
    passed: bool
    note: str


class GateDecision(BaseModel):
    """The gate's verdict on a challenger, with every compared figure."""

    model_name: str
    challenger: VersionFigures
    champion: VersionFigures | None
    config: GateConfig
    checks: list[GateCheck]
    promote: bool
    summary: str
    decided_at: str


class AliasChange(BaseModel):
    """A hand-made or gated move of the champion alias, as recorded in the registry."""

    action: Literal["promote", "rollback"]
    model_name: str
    alias: str
    version: int
    previous: int | None
    who: str
    why: str
    at: str


class PromotionError(RuntimeError):
    """A promotion or rollback that cannot be done, with the reason in one line."""


def _client():
    """Return an MLflow client on the configured tracking and registry store."""
    from mlflow import MlflowClient

    configure_mlflow()
    return MlflowClient()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def champion_version(model_name: str | None = None, alias: str | None = None) -> int | None:
    """Return the version that holds the champion alias, or None when there is no champion."""
    from mlflow.exceptions import MlflowException

    settings = get_settings()
    client = _client()
    try:
        found = client.get_model_version_by_alias(
            model_name or settings.model_name, alias or settings.champion_alias
        )
    except MlflowException:
        return None
    return int(found.version)


def version_figures(version: int, model_name: str | None = None) -> VersionFigures:
    """Return the gate figures logged on the training run of a registered version."""
    from mlflow.exceptions import MlflowException

    name = model_name or get_settings().model_name
    client = _client()
    try:
        model_version = client.get_model_version(name, str(version))
    except MlflowException:
        raise PromotionError(f"{name} has no version {version}") from None

    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    if model_version.run_id:
        run = client.get_run(model_version.run_id)
        metrics, tags = run.data.metrics, run.data.tags
    return VersionFigures(
        version=int(version),
        run_id=model_version.run_id,
        validation_sha256=tags.get(VALIDATION_TAG),
        suite_sha256=tags.get(SUITE_TAG),
        val_macro_recall=metrics.get(RECALL),
        behaviour_mean_failure_rate=metrics.get(MEAN_FAILURE),
        failure_rates={
            key.removeprefix(FAILURE_PREFIX): value
            for key, value in metrics.items()
            if key.startswith(FAILURE_PREFIX)
        },
    )


def _recall_check(challenger: VersionFigures, champion: VersionFigures, margin: float):
    mine, theirs = challenger.val_macro_recall, champion.val_macro_recall
    if mine is None or math.isnan(mine):
        return GateCheck(name=RECALL, challenger=mine, reference=theirs, limit=None,
                         passed=False, note="challenger has no validation macro recall")
    if theirs is None:
        return GateCheck(name=RECALL, challenger=mine, reference=None, limit=None,
                         passed=True, note="champion has no validation macro recall to beat")
    limit = theirs - margin
    passed = mine >= limit
    note = (f"validation macro recall {mine:.4f} {'>=' if passed else '<'} champion "
            f"{theirs:.4f} - margin {margin:.4f}")
    return GateCheck(name=RECALL, challenger=mine, reference=theirs, limit=limit,
                     passed=passed, note=note)


def _failure_check(challenger: VersionFigures, champion: VersionFigures, margin: float):
    mine, theirs = challenger.behaviour_mean_failure_rate, champion.behaviour_mean_failure_rate
    if mine is None or math.isnan(mine):
        return GateCheck(name=MEAN_FAILURE, challenger=mine, reference=theirs, limit=None,
                         passed=False, note="challenger has no behavioural mean failure rate")
    if theirs is None:
        return GateCheck(name=MEAN_FAILURE, challenger=mine, reference=None, limit=None,
                         passed=True, note="champion has no behavioural failure rate to beat")
    limit = theirs + margin
    passed = mine <= limit
    note = (f"behavioural mean failure rate {mine:.4f} {'<=' if passed else '>'} champion "
            f"{theirs:.4f} + margin {margin:.4f}")
    return GateCheck(name=MEAN_FAILURE, challenger=mine, reference=theirs, limit=limit,
                     passed=passed, note=note)


def _blocking_checks(
    challenger: VersionFigures, champion: VersionFigures | None, blocking: dict[str, float]
) -> list[GateCheck]:
    checks = []
    for slug, limit in sorted(blocking.items()):
        mine = challenger.failure_rates.get(slug)
        theirs = champion.failure_rates.get(slug) if champion else None
        name = f"{FAILURE_PREFIX}{slug}"
        if mine is None or math.isnan(mine):
            checks.append(GateCheck(name=name, challenger=None, reference=theirs, limit=limit,
                                    passed=False, note=f"blocking test {slug} was not measured"))
            continue
        passed = mine <= limit
        note = f"blocking test {slug}: {mine:.4f} {'<=' if passed else '>'} {limit:.4f}"
        checks.append(GateCheck(name=name, challenger=mine, reference=theirs, limit=limit,
                                passed=passed, note=note))
    return checks


def compare(
    challenger: VersionFigures,
    champion: VersionFigures | None,
    config: GateConfig,
    model_name: str | None = None,
) -> GateDecision:
    """Return the gate's decision for a challenger against the champion (None: no champion)."""
    name = model_name or get_settings().model_name
    checks = []
    if champion is not None and champion.version != challenger.version:
        checks.append(_recall_check(challenger, champion, config.recall_margin))
        checks.append(_failure_check(challenger, champion, config.failure_rate_margin))
    checks += _blocking_checks(challenger, champion, config.blocking)

    failed = [check for check in checks if not check.passed]
    promote = not failed
    if champion is None:
        reason = "no champion yet"
    elif champion.version == challenger.version:
        reason = "it is already the champion"
    else:
        reason = f"against champion version {champion.version}"
    if promote:
        summary = f"promote version {challenger.version}: passed {len(checks)} checks, {reason}"
    else:
        reasons = "; ".join(check.note for check in failed)
        summary = f"keep the champion: version {challenger.version} failed {reasons}"
    return GateDecision(model_name=name, challenger=challenger, champion=champion,
                        config=config, checks=checks, promote=promote, summary=summary,
                        decided_at=_now())


def file_sha256(path: str | Path) -> str:
    """Return the sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def suite_sha256(suite: str | None) -> str:
    """Return the sha256 of a suite file, or of the built-in suite's document when None."""
    if suite:
        return file_sha256(suite)
    from components.behaviour_templates import builtin_suite_document

    document = json.dumps(builtin_suite_document(), sort_keys=True).encode()
    return hashlib.sha256(document).hexdigest()


def measured_on_tags(validation: str, suite: str | None) -> dict[str, str]:
    """Return the run tags naming the validation file and suite a version is measured on."""
    return {VALIDATION_TAG: file_sha256(validation), SUITE_TAG: suite_sha256(suite)}


def remeasure(version: int, validation: str, suite: str | None,
              model_name: str | None = None) -> VersionFigures:
    """Return a version's gate figures measured now on the given validation file and suite."""
    from components.behaviour import resolve_suite, run_suite, slugify
    from components.evaluate import evaluate_model
    from components.model import load_classifier

    name = model_name or get_settings().model_name
    classifier = load_classifier(f"models:/{name}/{version}")
    result = evaluate_model(classifier.predict, [validation])[0]
    report = run_suite(resolve_suite(suite), classifier.predict_proba)
    rates = {slugify(test.name): test.failure_rate for test in report.tests
             if test.failure_rate is not None}
    logged = version_figures(version, name)
    return VersionFigures(version=version, run_id=logged.run_id,
                          val_macro_recall=result.macro_recall,
                          behaviour_mean_failure_rate=report.mean_failure_rate,
                          failure_rates=rates, remeasured=True,
                          validation_sha256=file_sha256(validation),
                          suite_sha256=suite_sha256(suite))


def evaluate_gate(
    version: int, config: GateConfig | None = None, model_name: str | None = None,
    validation: str | None = None, suite: str | None = None,
) -> GateDecision:
    """Return the gate's decision for a registered version against the current champion.

    When the champion was measured on another validation file or suite than the challenger,
    and the challenger's validation file is given, the champion is measured again on the
    challenger's files, so the two are always compared like for like.
    """
    name = model_name or get_settings().model_name
    challenger = version_figures(version, name)
    current = champion_version(name)
    champion = version_figures(current, name) if current is not None else None
    if (champion is not None and champion.version != challenger.version
            and validation is not None
            and (champion.validation_sha256, champion.suite_sha256)
            != (challenger.validation_sha256, challenger.suite_sha256)):
        champion = remeasure(champion.version, validation, suite, name)
    return compare(challenger, champion, config or GateConfig(), name)


def log_gate_decision(decision: GateDecision) -> None:
    """Write the decision and its figures to the challenger's run and model version in MLflow."""
    client = _client()
    version = str(decision.challenger.version)
    verdict = "passed" if decision.promote else "failed"
    client.set_model_version_tag(decision.model_name, version, "gate.decision", verdict)
    client.set_model_version_tag(decision.model_name, version, "gate.summary",
                                 decision.summary[:4000])

    run_id = decision.challenger.run_id
    if run_id is None:
        return
    champion = decision.champion
    client.set_tag(run_id, "gate.decision", verdict)
    client.set_tag(run_id, "gate.champion_version", str(champion.version) if champion else "none")
    client.log_metric(run_id, "gate.passed", 1.0 if decision.promote else 0.0)
    for check in decision.checks:
        for role in ("reference", "limit"):
            value = getattr(check, role)
            if value is not None:
                client.log_metric(run_id, f"gate.{role}.{check.name}", value)
    client.log_dict(run_id, decision.model_dump(mode="json"), "gate/decision.json")


def decision_markdown(decision: GateDecision) -> str:
    """Return the decision as a markdown report with one table row a check."""
    champion = decision.champion
    again = (" (measured again on the challenger's files)"
             if champion and champion.remeasured else "")
    lines = [
        f"# Promotion gate: {decision.model_name} version {decision.challenger.version}",
        "",
        f"**{'PROMOTE' if decision.promote else 'KEEP CHAMPION'}**: {decision.summary}",
        "",
        f"Champion: {f'version {champion.version}' if champion else 'none'}{again}. "
        f"Recall margin {decision.config.recall_margin}, "
        f"failure-rate margin {decision.config.failure_rate_margin}.",
        "",
        "| check | challenger | champion | limit | result |",
        "|---|---|---|---|---|",
    ]

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for check in decision.checks:
        result = "pass" if check.passed else f"FAIL: {check.note}"
        lines.append(f"| {check.name} | {shown(check.challenger)} | {shown(check.reference)} "
                     f"| {shown(check.limit)} | {result} |")
    if not decision.checks:
        lines.append("| (nothing to compare) | | | | pass |")
    return "\n".join(lines) + "\n"


def _history(client, model_name: str) -> list[AliasChange]:
    """Return the recorded alias changes of a registered model, oldest first."""
    tags = client.get_registered_model(model_name).tags
    changes = [
        AliasChange.model_validate_json(value)
        for key, value in sorted(tags.items())
        if key.startswith(HISTORY_PREFIX)
    ]
    return changes


def alias_history(model_name: str | None = None) -> list[AliasChange]:
    """Return the recorded promotions and rollbacks of the model, oldest first."""
    return _history(_client(), model_name or get_settings().model_name)


def _move_alias(action, model_name: str, version: int, who: str, why: str) -> AliasChange:
    """Point the champion alias at a version and record who moved it and why."""
    from mlflow.exceptions import MlflowException

    if not who.strip() or not why.strip():
        raise PromotionError("say who asked and why: both must be non-empty")
    settings = get_settings()
    alias = settings.champion_alias
    client = _client()
    try:
        client.get_model_version(model_name, str(version))
    except MlflowException:
        raise PromotionError(f"{model_name} has no version {version}") from None

    # Registry tags hold a few thousand characters, so a long reason is cut to fit.
    change = AliasChange(action=action, model_name=model_name, alias=alias, version=version,
                         previous=champion_version(model_name, alias), who=who[:200],
                         why=why[:2000], at=_now())
    client.set_registered_model_alias(model_name, alias, str(version))

    record = change.model_dump_json()
    index = len(_history(client, model_name)) + 1
    client.set_registered_model_tag(model_name, f"{HISTORY_PREFIX}{index:05d}", record)
    for key, value in (("who", change.who), ("why", change.why), ("at", change.at)):
        client.set_model_version_tag(model_name, str(version), f"{action}.{key}", value)
    if action == "rollback" and change.previous is not None:
        client.set_model_version_tag(model_name, str(change.previous), "rolled_back", change.at)
    log.info("%s: %s@%s -> version %d (was %s) by %s: %s", action, model_name, alias, version,
             change.previous, who, why)
    return change


def promote(version: int, who: str, why: str, model_name: str | None = None) -> AliasChange:
    """Make a version the champion by hand (or for the gate) and record who asked and why."""
    return _move_alias("promote", model_name or get_settings().model_name, version, who, why)


def rollback(who: str, why: str, model_name: str | None = None) -> AliasChange:
    """Give the champion alias back to the version that held it before the current one."""
    name = model_name or get_settings().model_name
    current = champion_version(name)
    if current is None:
        raise PromotionError(f"{name} has no champion to roll back")

    # The promotion that last installed the current champion names its predecessor; following
    # those links makes repeated rollbacks walk back through the champions in order.
    installs = [c for c in alias_history(name) if c.action == "promote" and c.version == current]
    previous = installs[-1].previous if installs else None
    if previous is None or previous == current:
        raise PromotionError(f"no earlier champion of {name} to roll back to from v{current}")
    return _move_alias("rollback", name, previous, who, why)


@task(name="promotion-gate")
def gate_task(
    version: int,
    config: GateConfig | None = None,
    model_name: str | None = None,
    apply: bool = True,
    validation: str | None = None,
    suite: str | None = None,
) -> GateDecision:
    """Decide on a challenger, log the decision everywhere and promote it if it passed."""
    logger = get_run_logger()
    decision = evaluate_gate(version, config, model_name, validation, suite)
    if decision.champion is not None and decision.champion.remeasured:
        logger.info("gate: champion version %d was measured on other files; measured it again "
                    "on the challenger's validation file and suite", decision.champion.version)
    log_gate_decision(decision)
    create_markdown_artifact(
        markdown=decision_markdown(decision),
        key="promotion-gate",
        description=f"gate decision for version {version}",
    )
    for check in decision.checks:
        logger.info("gate %s: %s", "pass" if check.passed else "FAIL", check.note)
    logger.info("gate decision: %s", decision.summary)

    already = decision.champion is not None and decision.champion.version == version
    if decision.promote and apply and not already:
        promote(version, who="promotion-gate", why=decision.summary, model_name=model_name)
    return decision


def gate_report(decision: GateDecision) -> str:
    """Return the decision as indented JSON, for the CLI and logs."""
    return json.dumps(decision.model_dump(mode="json"), indent=2)
