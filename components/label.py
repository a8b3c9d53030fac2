"""Label stage: keep gold labels and weak-label the rest with TextBlob or VADER polarity."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel, model_validator

GOLD = "gold"
_LABEL_ALIASES = {"0": "negative", "1": "neutral", "2": "positive", "neg": "negative",
                  "neu": "neutral", "pos": "positive"}


class LabellerConfig(BaseModel):
    """Which weak labeller to use and where its polarity thresholds lie."""

    name: Literal["textblob", "vader"] = "textblob"
    # The original design's rule: positive above 0.25, negative below 0, neutral between.
    positive_above: float = 0.25
    negative_below: float = 0.0

    @model_validator(mode="after")
    def _thresholds_are_ordered(self) -> LabellerConfig:
        if not (math.isfinite(self.positive_above) and math.isfinite(self.negative_below)):
            raise ValueError("labeller thresholds must be finite numbers")
        if self.negative_below > self.positive_above:
            raise ValueError(f"negative_below ({self.negative_below}) must not exceed "
                             f"positive_above ({self.positive_above})")
        return self

    @classmethod
    def for_labeller(cls, name: str) -> LabellerConfig:
        """Return the customary thresholds for a labeller (VADER's are +-0.05 on compound)."""
        if name == "vader":
            return cls(name="vader", positive_above=0.05, negative_below=-0.05)
        if name == "textblob":
            return cls(name="textblob")
        raise ValueError(f"unknown labeller {name!r}: use textblob or vader")


def polarity_scorer(name: str) -> Callable[[str], float]:
    """Return a function mapping a tweet to its polarity in [-1, 1]."""
    if name == "textblob":
        from textblob import TextBlob

        return lambda text: float(TextBlob(text).sentiment.polarity)
    if name == "vader":
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        analyser = SentimentIntensityAnalyzer()
        return lambda text: float(analyser.polarity_scores(text)["compound"])
    raise ValueError(f"unknown labeller {name!r}: use textblob or vader")


def polarity_label(polarity: float, config: LabellerConfig) -> str:
    """Return the sentiment label a polarity score maps to under the configured thresholds."""
    if polarity > config.positive_above:
        return "positive"
    if polarity < config.negative_below:
        return "negative"
    return "neutral"


def canonical_label(label: object) -> str | None:
    """Return the label in LABELS spelling, the raw value if unknown, or None if missing."""
    if label is None or (isinstance(label, float) and pd.isna(label)):
        return None
    text = str(label).strip().lower()
    if not text:
        return None
    return _LABEL_ALIASES.get(text, text)


def label_batch(tweets_path: str, out_path: str, config: LabellerConfig) -> dict[str, int]:
    """Write the batch with `label` and `label_source` filled; return counts by label source."""
    tweets = pd.read_parquet(tweets_path)
    tweets["label"] = [canonical_label(label) for label in tweets["label"]]
    missing = tweets["label"].isna()
    tweets["label_source"] = GOLD

    if missing.any():
        score = polarity_scorer(config.name)
        polarities = [score(text) for text in tweets.loc[missing, "text"]]
        tweets.loc[missing, "label"] = [polarity_label(p, config) for p in polarities]
        tweets.loc[missing, "label_source"] = config.name

    tweets.to_parquet(out_path, index=False)
    return {GOLD: int((~missing).sum()), config.name: int(missing.sum())}


@task(name="label")
def label_task(tweets_path: str, out_path: str, config: LabellerConfig) -> str:
    """Weak-label the unlabelled tweets and return the path of the labelled batch."""
    counts = label_batch(tweets_path, out_path, config)
    get_run_logger().info("labels: %d gold, %d weak (%s)", counts[GOLD], counts[config.name],
                          config.name)
    return out_path

