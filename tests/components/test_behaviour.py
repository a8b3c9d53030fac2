"""Behavioural suite stage: loading, the expectation semantics, reports and the built-in suite."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components import augment
from components import behaviour_templates as templates
from components.behaviour import (
    EXPECTATION_KINDS,
    BehaviourReport,
    SuiteError,
    builtin_suite,
    case_passes,
    load_suite,
    parse_suite,
    report_markdown,
    run_suite,
    template_augmentations,
)
from sentinova.settings import LABELS

SHARED_SUITE = Path(__file__).resolve().parents[3] / "shared/data/checklist/sentiment_suite.json"
needs_shared_suite = pytest.mark.skipif(
    not SHARED_SUITE.exists(), reason="the shared CheckList suite is not beside the checkout"
)

NEG, NEU, POS = 0, 1, 2


class TablePredictor:
    """A predict_proba double that looks each text up in a table and records its calls."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([self.table[text] for text in texts], dtype=float)


def one_test_suite(**test: Any) -> dict[str, Any]:
    """Return a suite document holding one test built from the given fields."""
    fields = {"name": "t", "capability": "Test", "paper_sample": None, **test}
    fields.setdefault("aggregate", "all" if fields["type"] == "MFT" else "all_except_first")
    return {"format": "sentiment-behavioral-suite/1", "tests": [fields]}


def run_one(predictor: TablePredictor, **test: Any) -> Any:
    """Return the single test result of running a one-test suite."""
    report = run_suite(parse_suite(one_test_suite(**test)), predictor)
    return report.tests[0]


def probs(neg: float, neu: float, pos: float) -> list[float]:
    return [neg, neu, pos]


def test_label_equals_fails_every_case_whose_prediction_differs_from_its_label() -> None:
    predictor = TablePredictor({
        "a": probs(0.1, 0.2, 0.7), "b": probs(0.6, 0.3, 0.1),
        "c": probs(0.2, 0.5, 0.3), "d": probs(0.5, 0.1, 0.4),
    })
    cases = [
        {"texts": ["a"], "label": POS}, {"texts": ["b"], "label": NEG},
        {"texts": ["c"], "label": POS}, {"texts": ["d"], "label": "negative"},
    ]
    result = run_one(predictor, type="MFT", expectation={"kind": "label_equals"}, cases=cases)

    assert (result.n_cases, result.n_counted, result.n_failed) == (4, 4, 1)
    assert result.failure_rate == 0.25
    assert result.examples[0].texts == ["c"]
    assert result.examples[0].predictions == ["neutral"]
    assert result.examples[0].expected == "positive"


def test_aggregate_all_needs_every_text_and_all_except_first_ignores_the_first() -> None:
    predictor = TablePredictor({"wrong": probs(0.7, 0.2, 0.1), "right": probs(0.1, 0.2, 0.7)})
    cases = [
        {"texts": ["wrong", "right"], "label": POS},
        {"texts": ["right", "right"], "label": POS},
    ]

    every = run_one(predictor, type="MFT", expectation={"kind": "label_equals"},
                    aggregate="all", cases=cases)
    after_first = run_one(predictor, type="MFT", expectation={"kind": "label_equals"},
                          aggregate="all_except_first", cases=cases)

    assert (every.n_failed, every.failure_rate) == (1, 0.5)
    assert (after_first.n_failed, after_first.failure_rate) == (0, 0.0)


def test_allowed_labels_accepts_any_listed_label() -> None:
    predictor = TablePredictor({
        "n": probs(0.8, 0.1, 0.1), "u": probs(0.1, 0.8, 0.1), "p": probs(0.1, 0.1, 0.8),
    })
    cases = [{"texts": ["n"]}, {"texts": ["u"]}, {"texts": ["p"]}]
    result = run_one(predictor, type="MFT",
                     expectation={"kind": "allowed_labels", "allowed": [NEU, POS]}, cases=cases)

    assert (result.n_counted, result.n_failed) == (3, 1)
    assert result.failure_rate == pytest.approx(1 / 3)
    assert result.examples[0].expected == "neutral or positive"


def test_allowed_by_label_picks_the_allowed_set_of_each_case_label() -> None:
    predictor = TablePredictor({
        "n": probs(0.8, 0.1, 0.1), "u": probs(0.1, 0.8, 0.1), "p": probs(0.1, 0.1, 0.8),
    })
    expectation = {"kind": "allowed_labels", "allowed_by_label": {"0": [0], "positive": [1, 2]}}
    cases = [
        {"texts": ["n"], "label": NEG},  # pass
        {"texts": ["u"], "label": NEG},  # fail: only negative is allowed
        {"texts": ["u"], "label": POS},  # pass
        {"texts": ["n"], "label": POS},  # fail
        {"texts": ["p"], "label": POS},  # pass
    ]
    result = run_one(predictor, type="MFT", expectation=expectation, cases=cases)

    assert (result.n_counted, result.n_failed) == (5, 2)
    assert result.failure_rate == 0.4


def test_invariant_passes_same_prediction_or_a_move_of_at_most_tolerance() -> None:
    original = probs(0.125, 0.25, 0.625)
    predictor = TablePredictor({
        "o": original,
        "same label, big move": probs(0.0, 0.0, 1.0),
        "flip, moves exactly tolerance": probs(0.5, 0.125, 0.375),
        "flip, moves past tolerance": probs(0.5, 0.25, 0.25),
    })
    cases = [
        {"texts": ["o", "same label, big move"]},
        {"texts": ["o", "flip, moves exactly tolerance"]},
        {"texts": ["o", "same label, big move", "flip, moves past tolerance"]},
    ]
    result = run_one(predictor, type="INV",
                     expectation={"kind": "invariant", "tolerance": 0.25}, cases=cases)

    assert (result.n_counted, result.n_failed) == (3, 1)
    assert result.examples[0].texts == ["o", "flip, moves past tolerance"]


def test_invariant_with_zero_tolerance_fails_any_label_flip() -> None:
    predictor = TablePredictor({"o": probs(0.3, 0.3, 0.4), "x": probs(0.41, 0.3, 0.29)})
    result = run_one(predictor, type="INV", expectation={"kind": "invariant"},
                     cases=[{"texts": ["o", "x"]}])

    assert result.failure_rate == 1.0


def test_a_change_of_exactly_a_decimal_tolerance_passes_despite_float_rounding() -> None:
    # 0.4 - 0.3 is 0.10000000000000003 in binary floating point.
    predictor = TablePredictor({"o": probs(0.3, 0.3, 0.4), "x": probs(0.4, 0.3, 0.3)})
    invariant = run_one(predictor, type="INV", expectation={"kind": "invariant", "tolerance": 0.1},
                        cases=[{"texts": ["o", "x"]}])
    monotonic = run_one(
        predictor, type="DIR", cases=[{"texts": ["o", "x"]}],
        expectation={"kind": "monotonic_confidence", "increasing": True, "tolerance": 0.1},
    )

    assert invariant.failure_rate == 0.0
    assert monotonic.failure_rate == 0.0


def test_monotonic_increasing_allows_a_drop_up_to_tolerance_and_skips_by_original_label() -> None:
    predictor = TablePredictor({
        "o": probs(0.125, 0.25, 0.625),
        "down 0.125": probs(0.25, 0.25, 0.5),
        "down 0.25": probs(0.25, 0.375, 0.375),
        "down 0.375": probs(0.5, 0.25, 0.25),
        "up": probs(0.0, 0.25, 0.75),
        "neutral original": probs(0.25, 0.5, 0.25),
        "neutral, then collapse": probs(0.0, 0.0, 1.0),
    })
    expectation = {"kind": "monotonic_confidence", "label": None, "increasing": True,
                   "tolerance": 0.25, "skip_if_original_prediction": NEU}
    cases = [
        {"texts": ["o", "down 0.125"]},  # pass
        {"texts": ["o", "down 0.25"]},  # pass at the edge
        {"texts": ["o", "up", "down 0.375"]},  # fail: one perturbation drops too far
        {"texts": ["neutral original", "neutral, then collapse"]},  # not counted
    ]
    result = run_one(predictor, type="DIR", expectation=expectation, cases=cases)

    assert (result.n_cases, result.n_counted, result.n_failed) == (4, 3, 1)
    assert result.failure_rate == pytest.approx(1 / 3)
    assert result.examples[0].texts == ["o", "down 0.375"]


def test_monotonic_increasing_does_not_count_an_original_probability_up_to_tolerance() -> None:
    predictor = TablePredictor({
        "low": probs(0.25, 0.25, 0.5), "lower": probs(0.0, 0.5, 0.5),
        "mid": probs(0.375, 0.125, 0.5), "gone": probs(0.0, 0.5, 0.5),
    })
    expectation = {"kind": "monotonic_confidence", "label": NEG, "increasing": True,
                   "tolerance": 0.25, "skip_if_original_prediction": None}
    cases = [
        {"texts": ["low", "lower"]},  # p(negative) = 0.25 <= tolerance: not counted
        {"texts": ["mid", "gone"]},  # p(negative) drops 0.375: fail
    ]
    result = run_one(predictor, type="DIR", expectation=expectation, cases=cases)

    assert (result.n_counted, result.n_failed, result.failure_rate) == (1, 1, 1.0)


def test_monotonic_not_increasing_allows_a_rise_up_to_tolerance_and_skips_saturated() -> None:
    predictor = TablePredictor({
        "o": probs(0.25, 0.25, 0.5),
        "up 0.25": probs(0.125, 0.125, 0.75),
        "up 0.375": probs(0.125, 0.0, 0.875),
        "down": probs(0.5, 0.25, 0.25),
        "saturated": probs(0.0, 0.25, 0.75),
        "saturated, then up": probs(0.0, 0.0, 1.0),
    })
    expectation = {"kind": "monotonic_confidence", "increasing": False, "tolerance": 0.25,
                   "skip_if_original_prediction": [NEU]}
    cases = [
        {"texts": ["o", "up 0.25"]},  # pass at the edge
        {"texts": ["o", "down"]},  # pass
        {"texts": ["o", "up 0.375"]},  # fail
        {"texts": ["saturated", "saturated, then up"]},  # 0.75 >= 1 - 0.25: not counted
    ]
    result = run_one(predictor, type="DIR", expectation=expectation, cases=cases)

    assert (result.n_counted, result.n_failed) == (3, 1)


def test_positivity_change_not_down_and_not_up_with_tolerance_edges() -> None:
    predictor = TablePredictor({
        "o": probs(0.25, 0.25, 0.5),  # positivity 0.25
        "down 0.25": probs(0.25, 0.5, 0.25),  # positivity 0
        "down 0.5": probs(0.5, 0.25, 0.25),  # positivity -0.25
        "up 0.25": probs(0.125, 0.25, 0.625),  # positivity 0.5
        "up 0.5": probs(0.0, 0.25, 0.75),  # positivity 0.75
    })
    cases = [
        {"texts": ["o", "down 0.25"]},
        {"texts": ["o", "down 0.5"]},
        {"texts": ["o", "up 0.25"]},
        {"texts": ["o", "up 0.5"]},
    ]
    not_down = run_one(predictor, type="DIR", cases=cases, expectation={
        "kind": "positivity_change", "direction": "not_down", "tolerance": 0.25,
        "positivity": "p(positive) - p(negative)"})
    not_up = run_one(predictor, type="DIR", cases=cases, expectation={
        "kind": "positivity_change", "direction": "not_up", "tolerance": 0.25})

    assert (not_down.n_counted, not_down.n_failed) == (4, 1)
    assert not_down.examples[0].texts == ["o", "down 0.5"]
    assert (not_up.n_counted, not_up.n_failed) == (4, 1)
    assert not_up.examples[0].texts == ["o", "up 0.5"]


def test_case_passes_judges_one_case_from_its_probabilities() -> None:
    suite = parse_suite(one_test_suite(
        type="DIR", cases=[{"texts": ["x", "y"]}],
        expectation={"kind": "positivity_change", "direction": "not_down", "tolerance": 0.1},
    ))
    test = suite.tests[0]

    assert case_passes(test, test.cases[0], [[0.2, 0.2, 0.6], [0.25, 0.2, 0.55]]) is True
    assert case_passes(test, test.cases[0], [[0.2, 0.2, 0.6], [0.5, 0.2, 0.3]]) is False


def test_a_test_with_no_counted_case_has_no_rate_and_is_left_out_of_the_mean() -> None:
    predictor = TablePredictor({"u": probs(0.2, 0.6, 0.2), "p": probs(0.1, 0.1, 0.8)})
    document = one_test_suite(
        type="DIR", cases=[{"texts": ["u", "p"]}],
        expectation={"kind": "monotonic_confidence", "tolerance": 0.1,
                     "skip_if_original_prediction": NEU},
    )
    document["tests"].append({
        "name": "u is positive", "type": "MFT", "capability": "Test", "aggregate": "all",
        "expectation": {"kind": "label_equals"}, "cases": [{"texts": ["u"], "label": POS}],
    })
    report = run_suite(parse_suite(document), predictor)

    assert report.tests[0].n_counted == 0
    assert report.tests[0].failure_rate is None
    assert report.mean_failure_rate == 1.0
    assert report.failure_rates() == {"u-is-positive": 1.0}


def test_mean_failure_rate_is_the_plain_mean_over_tests() -> None:
    predictor = TablePredictor({"p": probs(0.1, 0.1, 0.8), "n": probs(0.8, 0.1, 0.1)})
    mft = {"type": "MFT", "capability": "Test", "aggregate": "all",
           "expectation": {"kind": "label_equals"}}
    document = {"format": "sentiment-behavioral-suite/1", "tests": [
        {**mft, "name": "quarter", "cases": [{"texts": ["p"], "label": POS}] * 3
         + [{"texts": ["n"], "label": POS}]},
        {**mft, "name": "all wrong", "cases": [{"texts": ["p"], "label": NEG}]},
    ]}
    report = run_suite(parse_suite(document), predictor)

    assert [t.failure_rate for t in report.tests] == [0.25, 1.0]
    assert report.mean_failure_rate == 0.625


def test_paper_sample_selects_cases_by_index_and_null_means_all() -> None:
    predictor = TablePredictor({"p": probs(0.1, 0.1, 0.8), "n": probs(0.8, 0.1, 0.1)})
    cases = [{"texts": [t], "label": POS} for t in ("n", "p", "n", "p", "p")]
    sampled = parse_suite(one_test_suite(
        type="MFT", expectation={"kind": "label_equals"}, cases=cases, paper_sample=[4, 2, 1]
    ))
    unsampled = parse_suite(one_test_suite(
        type="MFT", expectation={"kind": "label_equals"}, cases=cases, paper_sample=None
    ))

    paper = run_suite(sampled, predictor).tests[0]
    every = run_suite(sampled, predictor, paper_sample=False).tests[0]
    null = run_suite(unsampled, predictor).tests[0]

    assert (paper.n_cases, paper.n_failed) == (3, 1)
    assert paper.failure_rate == pytest.approx(1 / 3)
    assert (every.n_cases, every.n_failed, every.failure_rate) == (5, 2, 0.4)
    assert (null.n_cases, null.failure_rate) == (5, 0.4)


def test_texts_are_predicted_once_each_in_few_large_batches() -> None:
    texts = [f"text {i}" for i in range(10)]
    predictor = TablePredictor({t: probs(0.1, 0.1, 0.8) for t in texts})
    document = one_test_suite(
        type="INV", expectation={"kind": "invariant", "tolerance": 0.1},
        cases=[{"texts": [texts[i], texts[(i + 1) % 10], texts[0]]} for i in range(10)],
    )
    run_suite(parse_suite(document), predictor, batch_size=4)

    predicted = [t for call in predictor.calls for t in call]
    assert sorted(predicted) == sorted(texts)
    assert [len(call) for call in predictor.calls] == [4, 4, 2]


def test_a_predictor_of_the_wrong_shape_gets_a_clear_error() -> None:
    suite = parse_suite(one_test_suite(type="MFT", expectation={"kind": "label_equals"},
                                       cases=[{"texts": ["a"], "label": POS}]))

    with pytest.raises(ValueError, match=r"shape \(1, 2\).*expected \(1, 3\)"):
        run_suite(suite, lambda texts: np.zeros((len(texts), 2)))
    with pytest.raises(ValueError, match="NaN"):
        run_suite(suite, lambda texts: np.full((len(texts), 3), np.nan))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "checklist/2"}, "unsupported suite format 'checklist/2'"),
        ({"expectation": {"kind": "sometimes"}}, "unknown expectation kind 'sometimes'"),
        ({"type": "INV"}, "label_equals is not an expectation of INV tests"),
        ({"cases": [{"texts": ["a"]}]}, "label_equals needs a label on every case"),
        ({"cases": [{"texts": ["a"], "label": "great"}]}, "label must be an index"),
        ({"paper_sample": [0, 3]}, "paper_sample index 3 is outside 0..0"),
        ({"aggregate": "most"}, "aggregate"),
        ({"expectation": {"kind": "allowed_labels"}}, "needs `allowed` or `allowed_by_label`"),
        ({"labels": ["positive", "neutral", "negative"]}, "labels must be"),
    ],
)
def test_a_malformed_suite_gets_a_one_line_reason(change: dict[str, Any], message: str) -> None:
    document = one_test_suite(type="MFT", expectation={"kind": "label_equals"},
                              cases=[{"texts": ["a"], "label": POS}])
    for key in ("format", "labels"):
        if key in change:
            document[key] = change.pop(key)
    document["tests"][0].update(change)

    with pytest.raises(SuiteError, match=message) as raised:
        parse_suite(document)
    assert "\n" not in str(raised.value)


def test_all_except_first_needs_two_texts_per_case() -> None:
    document = one_test_suite(type="INV", expectation={"kind": "invariant"},
                              cases=[{"texts": ["a", "b"]}, {"texts": ["c"]}])

    with pytest.raises(SuiteError, match="case 1 has 1"):
        parse_suite(document)


def test_load_suite_reports_a_missing_or_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")

    with pytest.raises(SuiteError, match="no behavioural suite at"):
        load_suite(tmp_path / "absent.json")
    with pytest.raises(SuiteError, match="cannot read behavioural suite"):
        load_suite(broken)


def test_report_markdown_renders_a_table_and_failing_examples() -> None:
    predictor = TablePredictor({"a | b": probs(0.7, 0.2, 0.1), "c": probs(0.1, 0.2, 0.7)})
    document = one_test_suite(
        name="pipes | in names", type="MFT", expectation={"kind": "label_equals"},
        cases=[{"texts": ["a | b"], "label": POS}, {"texts": ["c"], "label": POS}],
    )
    document["name"] = "tiny"
    report = run_suite(parse_suite(document), predictor)
    markdown = report_markdown(report)

    assert markdown.startswith("# Behavioural tests: tiny\n")
    assert "Mean failure rate **50.0%** over 1 tests" in markdown
    assert "| Test | pipes \\| in names | MFT | 50.0% | 1 / 2 | 2 |" in markdown
    assert "“a \\| b” → negative 0.70" in markdown
    assert BehaviourReport.model_validate_json(report.model_dump_json()) == report


def test_failing_examples_are_shortened_and_capped() -> None:
    long_text = "word " * 100
    predictor = TablePredictor({long_text.strip(): probs(0.7, 0.2, 0.1)})
    document = one_test_suite(type="MFT", expectation={"kind": "label_equals"},
                              cases=[{"texts": [long_text.strip()], "label": POS}] * 5)
    result = run_suite(parse_suite(document), predictor, n_examples=2).tests[0]

    assert len(result.examples) == 2
    assert len(result.examples[0].texts[0]) == 120
    assert result.examples[0].texts[0].endswith("…")


@needs_shared_suite
def test_the_shared_suite_loads_with_a_supported_expectation_on_every_test() -> None:
    suite = load_suite(SHARED_SUITE)
    raw = json.loads(SHARED_SUITE.read_text())

    assert suite.name == "sentiment_suite"
    assert len(suite.tests) == len(raw["tests"]) == 30
    assert {t.expectation.kind for t in suite.tests} <= set(EXPECTATION_KINDS)
    assert {t.type for t in suite.tests} == {"MFT", "INV", "DIR"}
    by_name = {t.name: t for t in suite.tests}
    assert len(by_name["single positive words"].selected_cases()) == 34
    assert len(by_name["typos"].selected_cases()) == 500
    assert len(by_name["typos"].selected_cases(paper_sample=False)) == 500
    assert len(by_name["used to, but now"].selected_cases(paper_sample=False)) == 8000


def test_the_builtin_suite_covers_the_required_capabilities() -> None:
    suite = builtin_suite()
    kinds = {(t.name, t.type, t.capability): t.expectation.kind for t in suite.tests}

    assert kinds[("negated positive is negative", "MFT", "Negation")] == "label_equals"
    assert kinds[("negated negative is not negative", "MFT", "Negation")] == "allowed_labels"
    for name in ("typos", "contractions", "added links and handles"):
        assert kinds[(name, "INV", "Robustness")] == "invariant"
    assert kinds[("name changes", "INV", "NER")] == "invariant"
    assert kinds[("intensifiers", "DIR", "Vocabulary")] == "monotonic_confidence"
    assert kinds[("added positive phrases", "DIR", "Vocabulary")] == "positivity_change"
    assert kinds[("added negative phrases", "DIR", "Vocabulary")] == "positivity_change"
    assert all(len(t.cases) >= 100 for t in suite.tests)


def expanded(text: str) -> str:
    """Return text with every contraction the built-in suite knows written out."""
    for short, long in templates.CONTRACTIONS:
        text = text.replace(short, long)
    return text


def test_builtin_perturbations_change_only_what_they_claim() -> None:
    tests = {t.name: t for t in builtin_suite(3).tests}

    for case in tests["typos"].cases:
        original, *typos = case.texts
        for typo in typos:
            assert typo != original and sorted(typo) == sorted(original)
    for case in tests["added links and handles"].cases:
        assert "https://" in case.texts[1] and case.texts[2].startswith("@")
    for case in tests["name changes"].cases:
        assert len(set(case.texts)) == 5
        assert {len(t.split()) for t in case.texts} == {len(case.texts[0].split())}
    for case in tests["contractions"].cases:
        original, *variants = case.texts
        for variant in variants:
            assert variant != original and expanded(variant) == expanded(original)


def test_builtin_suite_is_deterministic_given_a_seed() -> None:
    assert builtin_suite(7) == builtin_suite(7)
    assert builtin_suite(7) != builtin_suite(8)


def test_augmentations_are_deterministic_distinct_and_labelled() -> None:
    pairs = template_augmentations(seed=1, n=2000)

    assert pairs == template_augmentations(seed=1, n=2000)
    assert pairs != template_augmentations(seed=2, n=2000)
    assert len({text for text, _ in pairs}) == 2000
    assert {label for _, label in pairs} == set(LABELS)
    labelled = dict(pairs)
    negated_good = [t for t in labelled if re.search(r"\b(isn't|is not) good\b", t)]
    assert negated_good and {labelled[t] for t in negated_good} == {"negative"}
    good = set(augment.POSITIVE_ADJECTIVES)
    answered = [t for t in labelled
                if (m := re.search(r"is the ([\w -]+)\? (no|nope)\b", t.lower()))
                and good & set(m.group(1).split())]
    assert answered and {labelled[t] for t in answered} == {"negative"}


def test_each_augmentation_family_gives_the_label_its_sentence_means() -> None:
    rng = random.Random(0)
    samples = {family.__name__: [family(rng) for _ in range(300)] for family in augment.FAMILIES}

    assert {label for _, label in samples["identity_statement"]} == {"neutral"}
    assert {label for _, label in samples["neutral_description"]} == {"neutral"}
    assert {label for _, label in samples["negated_positive"]} == {"negative"}
    assert "negative" not in {label for _, label in samples["negated_negative"]}
    checked = 0
    for text, label in samples["changed_mind"]:
        for marker in (", now it is ", "but now I ", "these days it is "):
            if marker in text:
                later = set(text.split(marker, 1)[1].split())
                assert later & _label_words(label), text
                checked += 1
    assert checked > 50


def _label_words(label: str) -> set[str]:
    if label == "positive":
        return set(augment.POSITIVE_ADJECTIVES) | {v[0] for v in augment.POSITIVE_VERBS}
    return set(augment.NEGATIVE_ADJECTIVES) | {v[0] for v in augment.NEGATIVE_VERBS}


def test_excluded_texts_are_never_generated() -> None:
    first = template_augmentations(seed=0, n=500)
    banned = {text.lower() for text, _ in first[:100]}

    again = template_augmentations(seed=0, n=500, exclude=banned)

    assert len(again) == 500
    assert not banned & {text.lower() for text, _ in again}


def test_augmentations_share_no_word_or_sentence_with_the_builtin_suite() -> None:
    suite_words = {w.lower() for pool in (templates.SUITE_THINGS, templates.SUITE_POSITIVE,
                                          templates.SUITE_NEGATIVE, templates.SUITE_NEUTRAL,
                                          templates.SUITE_NAMES)
                   for phrase in pool for w in phrase.split()}
    augment_words = {w.lower() for pool in (augment.THINGS, augment.POSITIVE_ADJECTIVES,
                                            augment.NEGATIVE_ADJECTIVES,
                                            augment.NEUTRAL_ADJECTIVES, augment.NAMES,
                                            augment.IDENTITIES, augment.ROLES)
                     for phrase in pool for w in phrase.split()}
    suite_texts = {t for seed in (0, 1) for test in builtin_suite(seed).tests
                   for case in test.cases for t in case.texts}
    augment_texts = {t for t, _ in template_augmentations(seed=0, n=20_000)}

    assert not suite_words & augment_words
    assert not suite_texts & augment_texts


@needs_shared_suite
def test_augmentations_never_repeat_a_shared_suite_text_or_noun() -> None:
    shared = load_suite(SHARED_SUITE)
    texts = {t.lower() for test in shared.tests for c in test.cases for t in c.texts}
    own = {t.lower() for test in builtin_suite().tests for c in test.cases for t in c.texts}
    own |= {t.lower() for t, _ in template_augmentations(seed=0, n=20_000)}
    # The shared suite is about airlines; the augmentations never name what it talks about.
    airline_nouns = {"flight", "airline", "seat", "crew", "pilot", "plane", "aircraft", "food",
                     "service", "staff", "company"}

    assert not texts & own
    assert not airline_nouns & {w for thing in augment.THINGS for w in thing.split()}


@pytest.fixture(scope="module")
def vader() -> Any:
    """Return a function giving VADER's scores of a text, remembered across this module."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyser = SentimentIntensityAnalyzer()
    cache: dict[str, dict[str, float]] = {}

    def scores(text: str) -> dict[str, float]:
        if text not in cache:
            cache[text] = analyser.polarity_scores(text)
        return cache[text]

    return scores


@pytest.fixture(scope="module")
def shared_suite() -> Any:
    """Return the shared CheckList suite, loaded once for this module."""
    return load_suite(SHARED_SUITE)


def vader_predictor(vader_scores: Any, mapping: str) -> Any:
    """Return a predict_proba that turns VADER's scores into probabilities by mapping."""

    def predict_proba(texts: list[str]) -> np.ndarray:
        scores = [vader_scores(text) for text in texts]
        if mapping == "proportions":
            return np.array([[s["neg"], s["neu"], s["pos"]] for s in scores])
        compound = np.array([s["compound"] for s in scores])
        if mapping == "compound-linear":
            return np.stack(
                [np.maximum(-compound, 0), 1 - np.abs(compound), np.maximum(compound, 0)], axis=1
            )
        # VADER's documented rule: compound >= 0.05 positive, <= -0.05 negative, else neutral.
        label = np.where(compound >= 0.05, POS, np.where(compound <= -0.05, NEG, NEU))
        return np.eye(3)[label]

    return predict_proba


@needs_shared_suite
def test_vader_proportions_on_the_shared_suite_score_their_measured_failure_rate(
    vader: Any, shared_suite: Any
) -> None:
    started = time.perf_counter()
    report = run_suite(shared_suite, vader_predictor(vader, "proportions"))
    seconds = time.perf_counter() - started
    rates = {t.name: t.failure_rate for t in report.tests}

    # Measured with this mapping; the project's 22.7% anchor is not reproduced by it.
    assert report.mean_failure_rate == pytest.approx(0.2030, abs=5e-4)
    assert rates["simple negations: not negative"] == 0.0
    assert rates["simple negations: negative"] == pytest.approx(0.91)
    assert report.n_texts == 64_217
    assert seconds < 60


@needs_shared_suite
@pytest.mark.parametrize(
    ("mapping", "mean"), [("compound-linear", 0.2185), ("compound-one-hot", 0.2333)]
)
def test_vader_compound_mappings_score_their_measured_failure_rates(
    vader: Any, shared_suite: Any, mapping: str, mean: float
) -> None:
    report = run_suite(shared_suite, vader_predictor(vader, mapping))

    assert report.mean_failure_rate == pytest.approx(mean, abs=5e-4)


def test_vader_runs_the_builtin_suite_end_to_end(vader: Any) -> None:
    report = run_suite(builtin_suite(), vader_predictor(vader, "proportions"))

    assert report.suite == "builtin"
    assert len(report.tests) == 11
    assert all(t.n_counted > 0 for t in report.tests if t.type != "DIR")
    assert 0.0 < report.mean_failure_rate < 1.0
    assert "| Negation | negated positive is negative | MFT |" in report_markdown(report)
