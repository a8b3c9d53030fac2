import pandas as pd
import pytest

from components.label import (LabellerConfig, canonical_label, label_batch, polarity_label,
                              polarity_scorer)


@pytest.mark.parametrize("polarity,label", [(0.26, "positive"), (0.25, "neutral"),
                                            (0.0, "neutral"), (-0.01, "negative")])
def test_textblob_rule_of_the_original_design(polarity, label):
    assert polarity_label(polarity, LabellerConfig()) == label


def test_thresholds_are_configurable():
    config = LabellerConfig(positive_above=0.5, negative_below=-0.5)
    assert polarity_label(0.4, config) == "neutral"
    assert polarity_label(-0.6, config) == "negative"


def test_real_labellers_score_obvious_tweets():
    for name in ("textblob", "vader"):
        score = polarity_scorer(name)
        assert score("I love this, it is wonderful") > 0.25
        assert score("this is terrible, I hate it") < 0


def test_gold_labels_are_kept_and_the_rest_weak_labelled(tmp_path):
    frame = pd.DataFrame({"text": ["I love it, wonderful day", "awful awful service", "ok"],
                          "label": ["negative", None, "2"]})
    frame.to_parquet(tmp_path / "in.parquet")
    counts = label_batch(str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
                         LabellerConfig.for_labeller("vader"))
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert counts == {"gold": 2, "vader": 1}
    assert out["label"].tolist() == ["negative", "negative", "positive"]
    assert out["label_source"].tolist() == ["gold", "vader", "gold"]


def test_unknown_labeller_is_refused():
    with pytest.raises(ValueError, match="unknown labeller"):
        polarity_scorer("sentiwordnet")


def test_label_spellings_are_canonical():
    assert [canonical_label(v) for v in ("Positive", " neg ", 0, "", None, "meh")] == [
        "positive", "negative", "negative", None, None, "meh"]


def test_unknown_labeller_names_and_disordered_thresholds_are_refused():
    with pytest.raises(ValueError, match="unknown labeller"):
        LabellerConfig.for_labeller("VADER")
    with pytest.raises(ValueError, match="must not exceed"):
        LabellerConfig(positive_above=-0.5, negative_below=0.5)
    with pytest.raises(ValueError, match="finite"):
        LabellerConfig(positive_above=float("nan"))
