"""Behavioural tests (CheckList-style MFT, INV and DIR) of a three-class sentiment model."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from prefect import task
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sentinova.settings import LABELS

log = logging.getLogger(__name__)

SUITE_FORMAT = "sentiment-behavioral-suite/1"
BUILTIN_SUITE = "builtin"

# Some predictors round their probabilities (VADER to three decimals); without this slack a
# change of exactly `tolerance` (0.4 - 0.3 in binary floating point) would count as a failure.
TOLERANCE_SLACK = 1e-9

PredictProba = Callable[[list[str]], np.ndarray]


class SuiteError(ValueError):
    """A behavioural suite that is not of the supported format or breaks its own rules."""


def label_index(value: Any) -> int:
    """Return the index in LABELS of a label given as an index or as a label name."""
    if isinstance(value, bool):
        raise ValueError(f"label must be an index 0-2 or one of {LABELS}, got {value!r}")
    if isinstance(value, str):
        if value in LABELS:
            return LABELS.index(value)
        if value.strip().isdigit():
            value = int(value)
    if isinstance(value, int) and 0 <= value < len(LABELS):
        return value
    raise ValueError(f"label must be an index 0-2 or one of {LABELS}, got {value!r}")


def _label_or_none(value: Any) -> int | None:
    return None if value is None else label_index(value)


def _label_list(values: Any) -> Any:
    if isinstance(values, (list, tuple)):
        return [label_index(value) for value in values]
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelEquals(_Strict):
    """MFT: the predicted label must equal the case label."""

    kind: Literal["label_equals"]


class AllowedLabels(_Strict):
    """MFT: the predicted label must be in `allowed`, or in `allowed_by_label[case label]`."""

    kind: Literal["allowed_labels"]
    allowed: list[int] | None = None
    allowed_by_label: dict[int, list[int]] | None = None

    @field_validator("allowed", mode="before")
    @classmethod
    def _allowed_labels(cls, value: Any) -> Any:
        return _label_list(value)

    @field_validator("allowed_by_label", mode="before")
    @classmethod
    def _allowed_by_label(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {label_index(key): _label_list(labels) for key, labels in value.items()}
        return value

    @model_validator(mode="after")
    def _has_a_rule(self) -> AllowedLabels:
        if self.allowed is None and self.allowed_by_label is None:
            raise ValueError("allowed_labels needs `allowed` or `allowed_by_label`")
        return self

    def allowed_for(self, label: int | None) -> list[int]:
        """Return the labels a prediction may take for a case of the given label."""
        if self.allowed_by_label is not None and label in self.allowed_by_label:
            return self.allowed_by_label[label]
        if self.allowed is None:
            raise SuiteError(f"allowed_by_label has no entry for case label {label!r}")
        return self.allowed


class Invariant(_Strict):
    """INV: perturbed texts keep the original prediction, or its probability moves <= tolerance."""

    kind: Literal["invariant"]
    tolerance: float = Field(default=0.0, ge=0.0, le=1.0)


class MonotonicConfidence(_Strict):
    """DIR: the probability of one label must not go down (or up) by more than tolerance."""

    kind: Literal["monotonic_confidence"]
    label: int | None = None
    increasing: bool = True
    tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    skip_if_original_prediction: list[int] = Field(default_factory=list)

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        return _label_or_none(value)

    @field_validator("skip_if_original_prediction", mode="before")
    @classmethod
    def _skip(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return _label_list(value)
        return [label_index(value)]


class PositivityChange(_Strict):
    """DIR: positivity, p(positive) - p(negative), must not go down (or up) beyond tolerance."""

    kind: Literal["positivity_change"]
    direction: Literal["not_down", "not_up"]
    tolerance: float = Field(default=0.0, ge=0.0, le=2.0)
    positivity: Literal["p(positive) - p(negative)"] = "p(positive) - p(negative)"


Expectation = Annotated[
    LabelEquals | AllowedLabels | Invariant | MonotonicConfidence | PositivityChange,
    Field(discriminator="kind"),
]
EXPECTATION_KINDS = (
    "label_equals",
    "allowed_labels",
    "invariant",
    "monotonic_confidence",
    "positivity_change",
)
_KINDS_OF_TYPE = {
    "MFT": {"label_equals", "allowed_labels"},
    "INV": {"invariant"},
    "DIR": {"monotonic_confidence", "positivity_change"},
}


class Case(_Strict):
    """One test case: a text (MFT) or an original text followed by its perturbations."""

    texts: list[str] = Field(min_length=1)
    label: int | None = None

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        return _label_or_none(value)


class BehaviourTest(_Strict):
    """One behavioural test: an expectation applied to each of its cases."""

    name: str = Field(min_length=1)
    type: Literal["MFT", "INV", "DIR"]
    capability: str
    description: str = ""
    expectation: Expectation
    aggregate: Literal["all", "all_except_first"]
    cases: list[Case]
    paper_sample: list[int] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BehaviourTest:
        kind = self.expectation.kind
        if kind not in _KINDS_OF_TYPE[self.type]:
            raise ValueError(f"{kind} is not an expectation of {self.type} tests")
        if self.aggregate == "all_except_first":
            short = [i for i, case in enumerate(self.cases) if len(case.texts) < 2]
            if short:
                raise ValueError(
                    f"all_except_first needs 2+ texts per case; case {short[0]} has 1"
                )
        needs_label = isinstance(self.expectation, LabelEquals) or (
            isinstance(self.expectation, AllowedLabels) and self.expectation.allowed is None
        )
        if needs_label:
            unlabelled = [i for i, case in enumerate(self.cases) if case.label is None]
            if unlabelled:
                raise ValueError(
                    f"{kind} needs a label on every case; case {unlabelled[0]} has none"
                )
        if isinstance(self.expectation, AllowedLabels) and self.expectation.allowed is None:
            by_label = self.expectation.allowed_by_label or {}
            missing = sorted({c.label for c in self.cases if c.label not in by_label})
            if missing:
                raise ValueError(f"allowed_by_label has no entry for case label {missing[0]}")
        if self.paper_sample is not None:
            bad = [i for i in self.paper_sample if not 0 <= i < len(self.cases)]
            if bad:
                last = len(self.cases) - 1
                raise ValueError(f"paper_sample index {bad[0]} is outside 0..{last}")
            if len(set(self.paper_sample)) != len(self.paper_sample):
                raise ValueError("paper_sample repeats an index")
        return self

    def selected_cases(self, paper_sample: bool = True) -> list[Case]:
        """Return the cases to run: the paper_sample subset (when asked and set) or all."""
        if paper_sample and self.paper_sample is not None:
            return [self.cases[i] for i in self.paper_sample]
        return list(self.cases)


class Suite(_Strict):
    """A behavioural suite in the sentiment-behavioral-suite/1 format."""

    name: str
    format: Literal["sentiment-behavioral-suite/1"] = SUITE_FORMAT
    source: str = ""
    labels: tuple[str, str, str] = LABELS
    tests: list[BehaviourTest] = Field(min_length=1)

    @field_validator("labels")
    @classmethod
    def _label_order(cls, value: tuple[str, str, str]) -> tuple[str, str, str]:
        if tuple(value) != LABELS:
            raise ValueError(f"labels must be {list(LABELS)} in that order, got {list(value)}")
        return value


class FailingExample(BaseModel):
    """A failed case, shortened: its texts, what the model said and what was expected."""

    texts: list[str]
    predictions: list[str]
    probabilities: list[list[float]]
    expected: str


class BehaviourTestResult(BaseModel):
    """How a model did on one behavioural test."""

    name: str
    slug: str
    type: str
    capability: str
    n_cases: int
    n_counted: int
    n_failed: int
    failure_rate: float | None
    examples: list[FailingExample] = Field(default_factory=list)


class BehaviourReport(BaseModel):
    """How a model did on a behavioural suite, test by test."""

    suite: str
    paper_sample: bool
    n_texts: int
    seconds: float
    # The plain mean over the tests that counted at least one case.
    mean_failure_rate: float | None
    tests: list[BehaviourTestResult]

    def failure_rates(self) -> dict[str, float]:
        """Return the failure rate of every test that counted a case, keyed by test slug."""
        return {t.slug: t.failure_rate for t in self.tests if t.failure_rate is not None}


def _format_error(error: ValidationError, document: dict[str, Any]) -> str:
    first = error.errors()[0]
    where = list(first["loc"])
    if len(where) >= 2 and where[0] == "tests" and isinstance(where[1], int):
        tests = document.get("tests") or []
        name = tests[where[1]].get("name") if where[1] < len(tests) else None
        where[1] = f"{where[1]} ({name!r})" if name else where[1]
    place = ".".join(str(part) for part in where if part not in EXPECTATION_KINDS)
    message = first["msg"].removeprefix("Value error, ")
    return f"{place}: {message}" if place else message


def parse_suite(document: dict[str, Any], name: str | None = None) -> Suite:
    """Return the suite described by a decoded sentiment-behavioral-suite/1 document."""
    if not isinstance(document, dict):
        raise SuiteError("a behavioural suite must be a JSON object")
    found = document.get("format")
    if found != SUITE_FORMAT:
        raise SuiteError(f"unsupported suite format {found!r}; expected {SUITE_FORMAT!r}")
    tests = document.get("tests")
    if not isinstance(tests, list) or not tests:
        raise SuiteError("a behavioural suite needs a non-empty `tests` list")
    for position, test in enumerate(tests):
        expectation = test.get("expectation") if isinstance(test, dict) else None
        kind = expectation.get("kind") if isinstance(expectation, dict) else None
        if kind not in EXPECTATION_KINDS:
            label = test.get("name", position) if isinstance(test, dict) else position
            raise SuiteError(
                f"test {label!r}: unknown expectation kind {kind!r}; "
                f"supported: {', '.join(EXPECTATION_KINDS)}"
            )

    fields = {key: document[key] for key in ("format", "source", "labels") if key in document}
    try:
        return Suite(name=document.get("name") or name or "suite", tests=tests, **fields)
    except ValidationError as error:
        raise SuiteError(_format_error(error, document)) from None


def load_suite(path: str | Path) -> Suite:
    """Return the suite stored as JSON at path."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SuiteError(f"no behavioural suite at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SuiteError(f"cannot read behavioural suite {path}: {error}") from None
    return parse_suite(document, name=path.stem)


def resolve_suite(source: str | Path | None, seed: int = 0) -> Suite:
    """Return the built-in suite for None or "builtin", else the suite file at source."""
    if source is None or str(source) == BUILTIN_SUITE:
        return builtin_suite(seed)
    return load_suite(source)


def slugify(name: str) -> str:
    """Return a lowercase, dash-separated form of a test name, fit for a metric name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "test"


def _case_outcome(
    test: BehaviourTest, case: Case, probs: np.ndarray
) -> tuple[list[bool | None], list[int]]:
    """Return per-text verdicts (None: not counted) for a case and its predicted labels."""
    expectation = test.expectation
    predicted = probs.argmax(axis=1)
    texts = len(case.texts)

    if isinstance(expectation, LabelEquals):
        return [bool(p == case.label) for p in predicted], predicted.tolist()
    if isinstance(expectation, AllowedLabels):
        allowed = expectation.allowed_for(case.label)
        return [bool(p in allowed) for p in predicted], predicted.tolist()

    original = int(predicted[0])
    slack = TOLERANCE_SLACK
    if isinstance(expectation, Invariant):
        moved = np.abs(probs[:, original] - probs[0, original])
        verdicts = (predicted == original) | (moved <= expectation.tolerance + slack)
        return verdicts.tolist(), predicted.tolist()

    if isinstance(expectation, MonotonicConfidence):
        if original in expectation.skip_if_original_prediction:
            return [None] * texts, predicted.tolist()
        label = original if expectation.label is None else expectation.label
        tolerance = expectation.tolerance
        before = probs[0, label]
        # A confidence that is already at its floor (or ceiling) cannot fail the test.
        if expectation.increasing and before <= tolerance + slack:
            return [None] * texts, predicted.tolist()
        if not expectation.increasing and before >= 1 - tolerance - slack:
            return [None] * texts, predicted.tolist()
        change = probs[:, label] - before
        if expectation.increasing:
            verdicts = change + tolerance + slack >= 0
        else:
            verdicts = change - tolerance - slack <= 0
        return verdicts.tolist(), predicted.tolist()

    positivity = probs[:, 2] - probs[:, 0]
    change = positivity - positivity[0]
    if expectation.direction == "not_down":
        verdicts = change + expectation.tolerance + slack >= 0
    else:
        verdicts = change - expectation.tolerance - slack <= 0
    return verdicts.tolist(), predicted.tolist()


def case_passes(test: BehaviourTest, case: Case, probs: np.ndarray) -> bool | None:
    """Return whether a case passes its test given its texts' probabilities; None: not counted."""
    verdicts, _ = _case_outcome(test, case, np.asarray(probs, dtype=np.float64))
    return _aggregate(test, verdicts)


def _aggregate(test: BehaviourTest, verdicts: list[bool | None]) -> bool | None:
    checked = verdicts[1:] if test.aggregate == "all_except_first" else verdicts
    counted = [verdict for verdict in checked if verdict is not None]
    if not counted:
        return None
    return all(counted)


def _expected_text(test: BehaviourTest, case: Case) -> str:
    expectation = test.expectation
    if isinstance(expectation, LabelEquals):
        return LABELS[case.label]
    if isinstance(expectation, AllowedLabels):
        return " or ".join(LABELS[label] for label in expectation.allowed_for(case.label))
    if isinstance(expectation, Invariant):
        return f"same prediction as the first text (or within {expectation.tolerance:g})"
    if isinstance(expectation, MonotonicConfidence):
        which = "first text's label" if expectation.label is None else LABELS[expectation.label]
        way = "up" if not expectation.increasing else "down"
        return f"p({which}) not {way} by more than {expectation.tolerance:g}"
    way = "down" if expectation.direction == "not_down" else "up"
    return f"p(positive) - p(negative) not {way} by more than {expectation.tolerance:g}"


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _example(
    test: BehaviourTest,
    case: Case,
    probs: np.ndarray,
    verdicts: list[bool | None],
    predicted: list[int],
) -> FailingExample:
    if test.aggregate == "all_except_first":
        # The original text, then the first two perturbations that broke the expectation.
        failed = [i for i, verdict in enumerate(verdicts) if i > 0 and verdict is False]
        shown = [0, *failed[:2]]
    else:
        shown = [i for i, verdict in enumerate(verdicts) if verdict is False][:3]
    return FailingExample(
        texts=[_shorten(case.texts[i]) for i in shown],
        predictions=[LABELS[predicted[i]] for i in shown],
        probabilities=[[round(float(p), 3) for p in probs[i]] for i in shown],
        expected=_expected_text(test, case),
    )


def predict_texts(
    texts: Sequence[str], predict_proba: PredictProba, batch_size: int = 65_536
) -> np.ndarray:
    """Return the (n, 3) probabilities of texts, predicted in a few large batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        probs = np.asarray(predict_proba(batch), dtype=np.float64)
        if probs.shape != (len(batch), len(LABELS)):
            raise ValueError(
                f"predict_proba returned shape {probs.shape} for {len(batch)} texts; "
                f"expected ({len(batch)}, {len(LABELS)}) in the order {LABELS}"
            )
        if not np.isfinite(probs).all():
            raise ValueError("predict_proba returned a NaN or infinite probability")
        chunks.append(probs)
    if not chunks:
        return np.zeros((0, len(LABELS)))
    return np.concatenate(chunks)


def run_suite(
    suite: Suite,
    predict_proba: PredictProba,
    *,
    paper_sample: bool = True,
    batch_size: int = 65_536,
    n_examples: int = 3,
) -> BehaviourReport:
    """Return the report of running every test of the suite against predict_proba."""
    started = time.perf_counter()
    selections = [(test, test.selected_cases(paper_sample)) for test in suite.tests]

    # Every distinct text is predicted once; sorting by length keeps padded batches tight.
    distinct = {text for _, cases in selections for case in cases for text in case.texts}
    texts = sorted(distinct, key=lambda text: (len(text), text))
    row = {text: i for i, text in enumerate(texts)}
    probs = predict_texts(texts, predict_proba, batch_size)
    predicted_at = time.perf_counter()

    results = []
    slugs: set[str] = set()
    for test, cases in selections:
        counted = failed = 0
        examples: list[FailingExample] = []
        for case in cases:
            case_probs = probs[[row[text] for text in case.texts]]
            verdicts, predicted = _case_outcome(test, case, case_probs)
            passed = _aggregate(test, verdicts)
            if passed is None:
                continue
            counted += 1
            if not passed:
                failed += 1
                if len(examples) < n_examples:
                    examples.append(_example(test, case, case_probs, verdicts, predicted))
        slug = slugify(test.name)
        while slug in slugs:
            slug += "-again"
        slugs.add(slug)
        results.append(
            BehaviourTestResult(
                name=test.name,
                slug=slug,
                type=test.type,
                capability=test.capability,
                n_cases=len(cases),
                n_counted=counted,
                n_failed=failed,
                failure_rate=failed / counted if counted else None,
                examples=examples,
            )
        )

    rates = [r.failure_rate for r in results if r.failure_rate is not None]
    seconds = time.perf_counter() - started
    log.info(
        "behaviour suite %s: %d tests, %d texts predicted in %.1f s, scored in %.1f s",
        suite.name,
        len(results),
        len(texts),
        predicted_at - started,
        seconds - (predicted_at - started),
    )
    return BehaviourReport(
        suite=suite.name,
        paper_sample=paper_sample,
        n_texts=len(texts),
        seconds=round(seconds, 3),
        mean_failure_rate=float(np.mean(rates)) if rates else None,
        tests=results,
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _percent(rate: float | None) -> str:
    return "–" if rate is None or math.isnan(rate) else f"{100 * rate:.1f}%"


def report_markdown(report: BehaviourReport, examples_per_test: int = 1) -> str:
    """Return the report as Markdown: a summary line, a table of tests, failing examples."""
    sample = "paper sample" if report.paper_sample else "all cases"
    lines = [
        f"# Behavioural tests: {report.suite}",
        "",
        f"Mean failure rate **{_percent(report.mean_failure_rate)}** over "
        f"{len(report.tests)} tests ({sample}, {report.n_texts:,} distinct texts, "
        f"{report.seconds:.1f} s). Lower is better.",
        "",
        "| Capability | Test | Type | Failure rate | Failed / counted | Cases |",
        "|---|---|---|---:|---:|---:|",
    ]
    for t in report.tests:
        lines.append(
            f"| {_cell(t.capability)} | {_cell(t.name)} | {t.type} | "
            f"{_percent(t.failure_rate)} | {t.n_failed:,} / {t.n_counted:,} | {t.n_cases:,} |"
        )

    shown = [t for t in report.tests if t.examples]
    if shown and examples_per_test > 0:
        lines += ["", "## Failing examples", ""]
        for t in shown:
            for example in t.examples[:examples_per_test]:
                said = "; ".join(
                    f"“{_cell(text)}” → {label} {max(p):.2f}"
                    for text, label, p in zip(
                        example.texts,
                        example.predictions,
                        example.probabilities,
                        strict=True,
                    )
                )
                lines.append(f"- **{_cell(t.name)}** (expected {example.expected}): {said}")
    return "\n".join(lines) + "\n"


def builtin_suite(seed: int = 0) -> Suite:
    """Return Sentinova's own behavioural suite, generated from its templates with seed."""
    from components.behaviour_templates import builtin_suite_document

    return parse_suite(builtin_suite_document(seed), name=BUILTIN_SUITE)


def template_augmentations(seed: int, n: int, exclude: set[str] | None = None
                           ) -> list[tuple[str, str]]:
    """Return n (text, label) pairs from Sentinova's augmentation templates, none in exclude."""
    from components.augment import augmentation_pairs

    return augmentation_pairs(seed, n, exclude)


class BehaviourSummary(BaseModel):
    """Where the behavioural report was written, and its headline figure."""

    report_path: str
    suite: str
    mean_failure_rate: float | None


@task(name="behaviour")
def behaviour_task(model_dir: str, suite: str | None, report_path: str) -> BehaviourSummary:
    """Run the behavioural suite on the saved model; the report becomes a Prefect artifact."""
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    from components.model import SentimentClassifier

    classifier = SentimentClassifier.load(model_dir)
    report = run_suite(resolve_suite(suite), classifier.predict_proba)
    Path(report_path).write_text(report.model_dump_json(indent=2))
    create_markdown_artifact(key="behaviour-report", markdown=report_markdown(report),
                             description=f"Behavioural tests: {report.suite}")
    mean = report.mean_failure_rate
    get_run_logger().info("behaviour: %d tests on %d texts in %.1f s, mean failure rate %s",
                          len(report.tests), report.n_texts, report.seconds,
                          "n/a" if mean is None else f"{100 * mean:.1f}%")
    return BehaviourSummary(report_path=report_path, suite=report.suite, mean_failure_rate=mean)
