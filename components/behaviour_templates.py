"""Sentinova's own templates and vocabulary for the built-in behavioural tests.

These words build the built-in behavioural suite. The training augmentations
(components/augment.py) share none of them, so a model trained on the augmentations is never
tested on a word or sentence it has seen.
"""

from __future__ import annotations

import itertools
import random
import re
import string
from typing import Any

NEGATIVE, NEUTRAL, POSITIVE = 0, 1, 2
LABEL_NAMES = ("negative", "neutral", "positive")

SUITE_THINGS = (
    "phone", "laptop", "headphones", "coffee", "burger", "movie", "album", "concert",
    "hotel", "train ride", "app update", "novel", "haircut", "museum", "camera", "keyboard",
)
# Things a descriptive adjective such as "wooden" or "Japanese" can sensibly apply to.
SUITE_OBJECTS = ("phone", "laptop", "headphones", "camera", "keyboard", "novel")
SUITE_POSITIVE = (
    "great", "wonderful", "amazing", "excellent", "lovely", "brilliant", "fantastic",
    "delightful", "awesome", "outstanding",
)
SUITE_NEGATIVE = (
    "terrible", "awful", "horrible", "disappointing", "dreadful", "lousy", "useless",
    "pathetic", "abysmal", "annoying",
)
SUITE_NEUTRAL = (
    "silver", "wooden", "second-hand", "weekly", "Japanese", "digital", "rectangular", "imported",
)
SUITE_NAMES = (
    "Maya", "Tomas", "Priya", "Kwame", "Ingrid", "Mateo", "Aisha", "Dmitri", "Hannah", "Kenji",
    "Lucia", "Omar", "Sofia", "Rafael", "Nadia", "Elliot",
)
SUITE_INTENSIFIERS = (
    "really", "truly", "extremely", "incredibly", "very", "absolutely", "seriously",
    "remarkably",
)
SUITE_POSITIVE_PHRASES = (
    "Made my day.", "Highly recommend!", "Couldn't be happier.", "You all rock.",
    "Ten out of ten.", "Thank you so much!",
)
SUITE_NEGATIVE_PHRASES = (
    "Never again.", "What a letdown.", "Worst purchase this year.", "I want my money back.",
    "Absolute waste of time.", "So fed up with this.",
)

# Frames of the MFTs; {a} is the article that fits the word after it.
SUITE_PLAIN = (
    "The {thing} is {adj}.",
    "What {a} {adj} {thing}!",
    "I found the {thing} {adj}.",
    "Today's {thing} was {adj}.",
)
SUITE_NEGATED = (
    "The {thing} was not {adj} at all.",
    "Honestly, this {thing} isn't {adj}.",
    "That {thing} was never {adj}.",
    "I wouldn't say the {thing} is {adj}.",
    "This {thing} is not {adj}.",
)
SUITE_NEUTRAL_FRAMES = (
    "The {thing} is {adj}.",
    "This {thing} is {adj}.",
    "It is {a} {adj} {thing}.",
)
SUITE_INTENSIFIABLE = (
    "The {thing} was {adj}.",
    "This {thing} is {adj}, {name} agrees.",
    "Such {a} {adj} {thing} tonight.",
)

# Tweet-like frames for the INV and DIR tests: each names someone and has contraction sites.
SUITE_TWEETS = {
    POSITIVE: (
        "Just tried the {thing} {name} told me about and it's {adj}, can't stop smiling",
        "{name} recommended this {thing} and it is {adj}. I do not regret it",
        "I can't believe how {adj} the {thing} is, thanks {name}!",
        "We're loving the {thing}, {name} was right, it's {adj}",
    ),
    NEGATIVE: (
        "Just tried the {thing} {name} told me about and it's {adj}, what a waste",
        "{name} recommended this {thing} and it is {adj}. I do not want it",
        "I can't believe how {adj} the {thing} is, thanks a lot {name}",
        "We're done with the {thing}, {name} was right, it's {adj}",
    ),
    NEUTRAL: (
        "{name} and I are talking about the {thing} at 5 today, it is on the agenda",
        "Does anyone know if {name} wrote about the {thing}? I'd like to read it",
        "I'm meeting {name} to talk about the {thing} tomorrow, it's at noon",
    ),
}

# Written pairs only: each direction is tried so a text can be contracted or expanded.
CONTRACTIONS = (
    ("can't", "cannot"), ("it's", "it is"), ("don't", "do not"), ("We're", "We are"),
    ("I'd", "I would"), ("isn't", "is not"), ("I'm", "I am"), ("wasn't", "was not"),
)
URL_DOMAINS = ("example.com", "example.org", "example.net", "pics.example", "links.example")

def article(word: str) -> str:
    """Return "a" or "an" for the word that follows it."""
    lowered = word.lower()
    if lowered.startswith(("use", "uni", "eu", "one")):
        return "a"
    return "an" if lowered[:1] in "aeiou" else "a"


def fill(frame: str, **slots: str) -> str:
    """Return the frame with its slots filled and {a} set to the article of the next word."""
    text = frame.format(a="{a}", **slots)
    while "{a}" in text:
        following = text.split("{a}", 1)[1].split()[0]
        text = text.replace("{a}", article(following), 1)
    return text


def _sample(rng: random.Random, combos: list[tuple[Any, ...]], k: int) -> list[tuple[Any, ...]]:
    return rng.sample(combos, min(k, len(combos)))


def _mft(name: str, capability: str, description: str, expectation: dict[str, Any],
         cases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name, "type": "MFT", "capability": capability, "description": description,
        "expectation": expectation, "aggregate": "all", "cases": cases, "paper_sample": None,
    }


def _perturbation(name: str, test_type: str, capability: str, description: str,
                  expectation: dict[str, Any], cases: list[list[str]]) -> dict[str, Any]:
    return {
        "name": name, "type": test_type, "capability": capability, "description": description,
        "expectation": expectation, "aggregate": "all_except_first",
        "cases": [{"texts": texts} for texts in cases], "paper_sample": None,
    }


def _vocabulary_cases(rng: random.Random, k: int) -> list[dict[str, Any]]:
    pools = ((POSITIVE, SUITE_POSITIVE), (NEGATIVE, SUITE_NEGATIVE))
    combos = [
        (label, frame, thing, adj)
        for label, adjs in pools
        for frame, thing, adj in itertools.product(SUITE_PLAIN, SUITE_THINGS, adjs)
    ]
    return [
        {"texts": [fill(frame, thing=thing, adj=adj)], "label": label}
        for label, frame, thing, adj in _sample(rng, combos, k)
    ]


def _frame_cases(rng: random.Random, frames: tuple[str, ...], adjs: tuple[str, ...],
                 k: int, label: int | None,
                 things: tuple[str, ...] = SUITE_THINGS) -> list[dict[str, Any]]:
    combos = list(itertools.product(frames, things, adjs))
    cases = []
    for frame, thing, adj in _sample(rng, combos, k):
        case: dict[str, Any] = {"texts": [fill(frame, thing=thing, adj=adj)]}
        if label is not None:
            case["label"] = label
        cases.append(case)
    return cases


def _tweet_slots(rng: random.Random, k: int) -> list[tuple[int, str, dict[str, str]]]:
    """Return k (label, frame, slots) picks of tweet frames, balanced across labels."""
    picks = []
    pools = {POSITIVE: SUITE_POSITIVE, NEGATIVE: SUITE_NEGATIVE, NEUTRAL: ("",)}
    labels = (POSITIVE, NEGATIVE, NEUTRAL)
    for i in range(k):
        label = labels[i % len(labels)]
        frame = rng.choice(SUITE_TWEETS[label])
        slots = {
            "thing": rng.choice(SUITE_THINGS),
            "adj": rng.choice(pools[label]),
            "name": rng.choice(SUITE_NAMES),
        }
        picks.append((label, frame, slots))
    return picks


def add_typo(text: str, rng: random.Random) -> str:
    """Return text with two adjacent letters of one word (3+ letters) swapped."""
    words = [m for m in re.finditer(r"[A-Za-z]{3,}", text)]
    if not words:
        return text
    word = rng.choice(words)
    at = rng.randrange(word.start(), word.end() - 1)
    while text[at] == text[at + 1] and at + 2 < word.end():
        at += 1
    return text[:at] + text[at + 1] + text[at] + text[at + 2 :]


def typo_variants(text: str, rng: random.Random, k: int) -> list[str]:
    """Return up to k distinct one-typo versions of text."""
    variants: list[str] = []
    for _ in range(10 * k):
        typo = add_typo(text, rng)
        if typo != text and typo not in variants:
            variants.append(typo)
        if len(variants) == k:
            break
    return variants


def contraction_variants(text: str) -> list[str]:
    """Return text with every contraction flipped, then with each one flipped alone."""
    sites = []
    for short, long in CONTRACTIONS:
        for form, other in ((short, long), (long, short)):
            for m in re.finditer(rf"(?<![\w']){re.escape(form)}(?![\w'])", text):
                sites.append((m.start(), m.end(), other))
    sites.sort()
    kept, end = [], -1
    for start, stop, other in sites:
        if start >= end:
            kept.append((start, stop, other))
            end = stop

    def flip(chosen: list[tuple[int, int, str]]) -> str:
        out = text
        for start, stop, other in reversed(chosen):
            out = out[:start] + other + out[stop:]
        return out

    if not kept:
        return []
    variants = [flip(kept)] + ([flip([site]) for site in kept] if len(kept) > 1 else [])
    return list(dict.fromkeys(variants))


def _random_token(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(size))


def link_and_handle_variants(text: str, rng: random.Random) -> list[str]:
    """Return text with a made-up link at its end, a handle at its start, and both."""
    link = f"https://{rng.choice(URL_DOMAINS)}/{_random_token(rng, 7)}"
    handle = f"@{rng.choice(SUITE_NAMES).lower()}{rng.randrange(10, 999)}"
    return [f"{text} {link}", f"{handle} {text}", f"{handle} {text} {link}"]


def builtin_suite_document(seed: int = 0, size: int = 120) -> dict[str, Any]:
    """Return the built-in suite as a sentiment-behavioral-suite/1 document."""
    rng = random.Random(seed)
    tolerance = 0.1
    invariant = {"kind": "invariant", "tolerance": tolerance}
    tests = [
        _mft(
            "sentiment words in context", "Vocabulary",
            "Plain statements with one positive or negative adjective keep its polarity.",
            {"kind": "label_equals"}, _vocabulary_cases(rng, size),
        ),
        _mft(
            "neutral words in context", "Vocabulary",
            "Plain statements with a descriptive, non-evaluative adjective are neutral.",
            {"kind": "label_equals"},
            _frame_cases(rng, SUITE_NEUTRAL_FRAMES, SUITE_NEUTRAL, size, NEUTRAL, SUITE_OBJECTS),
        ),
        _mft(
            "negated positive is negative", "Negation",
            "Negating a positive adjective makes the statement negative.",
            {"kind": "label_equals"},
            _frame_cases(rng, SUITE_NEGATED, SUITE_POSITIVE, size, NEGATIVE),
        ),
        _mft(
            "negated negative is not negative", "Negation",
            "Negating a negative adjective makes the statement neutral or positive.",
            {"kind": "allowed_labels", "allowed": [NEUTRAL, POSITIVE]},
            _frame_cases(rng, SUITE_NEGATED, SUITE_NEGATIVE, size, None),
        ),
    ]

    tweets = [fill(frame, **slots) for _, frame, slots in _tweet_slots(rng, size)]
    tests.append(_perturbation(
        "typos", "INV", "Robustness", "Swapping two adjacent letters keeps the prediction.",
        invariant, [[t, *typo_variants(t, rng, 2)] for t in tweets],
    ))
    contracted = [[t, *contraction_variants(t)] for t in tweets]
    tests.append(_perturbation(
        "contractions", "INV", "Robustness",
        "Contracting or expanding forms such as it's / it is keeps the prediction.",
        invariant, [texts for texts in contracted if len(texts) > 1],
    ))
    tests.append(_perturbation(
        "added links and handles", "INV", "Robustness",
        "A made-up link or @handle at the start or end keeps the prediction.",
        invariant, [[t, *link_and_handle_variants(t, rng)] for t in tweets],
    ))

    renamed = []
    for _, frame, slots in _tweet_slots(rng, size):
        others = rng.sample([n for n in SUITE_NAMES if n != slots["name"]], 4)
        renamed.append([fill(frame, **{**slots, "name": n}) for n in [slots["name"], *others]])
    tests.append(_perturbation(
        "name changes", "INV", "NER", "Replacing a person's first name keeps the prediction.",
        invariant, renamed,
    ))

    intensified = []
    combos = list(itertools.product(
        SUITE_INTENSIFIABLE, SUITE_POSITIVE + SUITE_NEGATIVE, SUITE_THINGS
    ))
    for frame, adj, thing in _sample(rng, combos, size):
        slots = {"thing": thing, "name": rng.choice(SUITE_NAMES)}
        words = rng.sample(SUITE_INTENSIFIERS, 3)
        intensified.append([fill(frame, adj=adj, **slots)] + [
            fill(frame, adj=f"{word} {adj}", **slots) for word in words
        ])
    tests.append(_perturbation(
        "intensifiers", "DIR", "Vocabulary",
        "An intensifier before the adjective does not lower the confidence in the prediction.",
        {"kind": "monotonic_confidence", "label": None, "increasing": True,
         "tolerance": tolerance, "skip_if_original_prediction": NEUTRAL},
        intensified,
    ))

    for direction, phrases, polarity in (
        ("not_down", SUITE_POSITIVE_PHRASES, "positive"),
        ("not_up", SUITE_NEGATIVE_PHRASES, "negative"),
    ):
        cases = [[t, *(f"{t.rstrip('.!')}. {p}" for p in rng.sample(phrases, 3))]
                 for t in tweets]
        way = "lower" if direction == "not_down" else "raise"
        tests.append(_perturbation(
            f"added {polarity} phrases", "DIR", "Vocabulary",
            f"Ending with a {polarity} phrase does not {way} p(positive) - p(negative).",
            {"kind": "positivity_change", "direction": direction, "tolerance": tolerance},
            cases,
        ))

    return {
        "format": "sentiment-behavioral-suite/1",
        "name": "builtin",
        "source": f"Sentinova's own templates and vocabulary (seed {seed})",
        "labels": list(LABEL_NAMES),
        "tests": tests,
    }
