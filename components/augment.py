"""Training augmentations from Sentinova's own templates: the linguistic cases tweets rarely teach.

Tweets seldom spell out "not bad", "I used to like it, but now ...", an answered question or an
identity word in a neutral sentence, so a model trained on them alone guesses. These templates
state such cases with labels a reader would give. Their words never appear in the built-in
suite's vocabulary (components/behaviour_templates.py) and their nouns never in the shared
suite's, so both suites keep measuring generalisation, not recall; the training flow also drops
any generated text that equals a suite text.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

NEGATIVE, NEUTRAL, POSITIVE = "negative", "neutral", "positive"

THINGS = (
    "sandwich", "podcast", "jacket", "printer", "bike", "tv show", "restaurant", "video game",
    "smartwatch", "pasta", "gym", "bakery", "mattress", "charger", "backpack", "tablet",
    "bus trip", "taxi", "ferry", "cruise", "hostel", "lounge", "booking site", "delivery",
    "waiter", "driver", "receptionist", "support team", "ticket office", "checkout", "menu",
    "playlist", "store", "shuttle", "car rental", "pharmacy", "salon", "stadium",
)
POSITIVE_ADJECTIVES = (
    "good", "nice", "enjoyable", "charming", "impressive", "pleasant", "solid", "terrific",
    "fabulous", "splendid", "superb", "friendly", "helpful", "fun", "beautiful", "cool",
    "sweet", "smooth", "reliable", "comfortable", "top-notch", "stellar", "marvelous",
    "first-rate", "perfect", "exceptional",
)
NEGATIVE_ADJECTIVES = (
    "bad", "poor", "nasty", "crappy", "mediocre", "frustrating", "disgusting", "boring", "ugly",
    "unreliable", "rude", "slow", "dirty", "unhelpful", "broken", "miserable", "messy",
    "overpriced", "uncomfortable", "lame", "rotten", "subpar", "atrocious", "shoddy", "sad",
    "rough",
)
NEUTRAL_ADJECTIVES = (
    "green", "plastic", "rented", "monthly", "round", "refurbished", "standard", "blue",
    "metal", "local", "public", "annual", "electric", "northern", "domestic", "foreign",
    "overnight", "regional", "Canadian", "Mexican", "German", "French", "Brazilian", "Swedish",
    "Nigerian", "Irish", "Polish", "Turkish", "Egyptian", "Vietnamese", "Korean", "Spanish",
    "Dutch", "Greek",
)
# (present, past, third person)
POSITIVE_VERBS = (
    ("like", "liked", "likes"), ("love", "loved", "loves"), ("enjoy", "enjoyed", "enjoys"),
    ("adore", "adored", "adores"), ("cherish", "cherished", "cherishes"),
    ("praise", "praised", "praises"), ("trust", "trusted", "trusts"),
    ("appreciate", "appreciated", "appreciates"), ("recommend", "recommended", "recommends"),
)
NEGATIVE_VERBS = (
    ("hate", "hated", "hates"), ("dislike", "disliked", "dislikes"),
    ("detest", "detested", "detests"), ("loathe", "loathed", "loathes"),
    ("resent", "resented", "resents"), ("regret", "regretted", "regrets"),
    ("despise", "despised", "despises"),
)
IDENTITIES = (
    "Canadian", "Mexican", "German", "French", "Brazilian", "Nigerian", "Irish", "Korean",
    "Chinese", "Indian", "American", "Russian", "Iranian", "Pakistani", "Filipino", "Kenyan",
    "Jewish", "Muslim", "Christian", "Hindu", "Buddhist", "Sikh", "atheist", "Catholic",
    "gay", "lesbian", "straight", "bisexual", "transgender", "queer", "asexual", "nonbinary",
    "black", "white", "Asian", "Latino", "Hispanic", "Arab", "Native American", "immigrant",
)
ROLES = (
    "teacher", "nurse", "engineer", "chef", "student", "lawyer", "artist", "farmer", "writer",
    "doctor", "neighbour", "coworker", "mechanic", "designer", "musician", "scientist",
    "firefighter", "librarian", "programmer", "painter",
)
NAMES = (
    "Amara", "Bjorn", "Chen", "Dolores", "Efua", "Farid", "Greta", "Hamza", "Ines", "Jonas",
    "Keiko", "Leon", "Marisol", "Nikhil", "Olga", "Pedro", "Quinn", "Rosa", "Sione", "Tariq",
    "Uma", "Viktor", "Wanjiru", "Xavier", "Yara", "Zane",
)
OTHERS = (
    "my friends", "some people", "many people", "my brothers", "the critics", "a lot of folks",
    "my coworkers", "my parents", "most reviewers", "my roommates",
)
FILLERS = (
    "after all these months", "considering how often I go there", "now that summer is over",
    "as someone who uses it every day", "looking back at last year", "with everything going on",
    "after trying it twice", "to be completely honest",
)
OPENERS = ("", "", "", "ok so ", "tbh ", "Update: ", "honestly ")
CLOSERS = ("", "", ".", "!", " today", " #review", " lol")
YES = ("Yes", "Yes.", "yes", "Yep", "Absolutely, yes", "Yes!")
NO = ("No", "No.", "no", "Nope", "Definitely not", "No!")

Family = Callable[[random.Random], tuple[str, str]]


def _a(word: str) -> str:
    """Return the word with "a" or "an" in front of it."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _pick(rng: random.Random, *pools: tuple) -> list:
    return [rng.choice(pool) for pool in pools]


def plain_sentiment(rng: random.Random) -> tuple[str, str]:
    """A plain statement of one opinion: adjective or verb, positive or negative."""
    label = rng.choice((POSITIVE, NEGATIVE))
    adjs, verbs = ((POSITIVE_ADJECTIVES, POSITIVE_VERBS) if label == POSITIVE
                   else (NEGATIVE_ADJECTIVES, NEGATIVE_VERBS))
    thing, adj, verb = _pick(rng, THINGS, adjs, verbs)
    frames = (f"The {thing} is {adj}", f"Their {thing} was {adj}", f"What {_a(adj)} {thing}",
              f"I {verb[0]} this {thing}", f"We {verb[1]} the {thing}",
              f"{rng.choice(NAMES)} {verb[2]} the {thing}", f"My {thing} turned out {adj}")
    return rng.choice(frames), label


def neutral_description(rng: random.Random) -> tuple[str, str]:
    """A factual description with a non-evaluative adjective, plain or negated: neutral."""
    thing, adj = _pick(rng, THINGS, NEUTRAL_ADJECTIVES)
    frames = (f"The {thing} is {adj}", f"It's {_a(adj)} {thing}", f"That {thing} was {adj}",
              f"We booked {_a(adj)} {thing}", f"The {thing} isn't {adj}",
              f"It was not {_a(adj)} {thing}", f"Our {thing} wasn't {adj} this time",
              f"Is the {thing} {adj}?")
    return rng.choice(frames), NEUTRAL


def negated_positive(rng: random.Random) -> tuple[str, str]:
    """A positive word under negation: negative."""
    thing, adj, verb = _pick(rng, THINGS, POSITIVE_ADJECTIVES, POSITIVE_VERBS)
    frames = (f"The {thing} is not {adj}", f"This {thing} isn't {adj}",
              f"My {thing} wasn't {adj} at all", f"I don't {verb[0]} the {thing}",
              f"We didn't {verb[0]} this {thing}", f"I never {verb[1]} that {thing}",
              f"I can't say I {verb[0]} the {thing}", f"I wouldn't call the {thing} {adj}",
              f"I don't think the {thing} is {adj}", f"Nobody would say this {thing} is {adj}",
              f"It's not {_a(adj)} {thing}", f"No one {verb[2]} this {thing}")
    return rng.choice(frames), NEGATIVE


def negated_negative(rng: random.Random) -> tuple[str, str]:
    """A negative word under negation: not negative (neutral; positive with a positive cue)."""
    thing, adj, verb, good = _pick(rng, THINGS, NEGATIVE_ADJECTIVES, NEGATIVE_VERBS,
                                   POSITIVE_ADJECTIVES)
    if rng.random() < 0.25:
        frames = (f"The {thing} wasn't {adj} at all, it was {good}",
                  f"Not {adj} in the slightest, this {thing} is {good}")
        return rng.choice(frames), POSITIVE
    frames = (f"The {thing} is not {adj}", f"This {thing} isn't {adj}",
              f"Our {thing} wasn't {adj}", f"I don't {verb[0]} the {thing}",
              f"We didn't {verb[0]} this {thing}", f"I never {verb[1]} that {thing}",
              f"I don't think I {verb[0]} this {thing}", f"It's not {_a(adj)} {thing}",
              f"I wouldn't call the {thing} {adj}", f"I don't think the {thing} is {adj}")
    return rng.choice(frames), NEUTRAL


def expectation_denied(rng: random.Random) -> tuple[str, str]:
    """An expectation and then "but it wasn't": the expected quality is denied."""
    thing = rng.choice(THINGS)
    kind = rng.choice((POSITIVE, NEGATIVE, NEUTRAL))
    adj, verb = (_pick(rng, POSITIVE_ADJECTIVES, POSITIVE_VERBS) if kind == POSITIVE else
                 _pick(rng, NEGATIVE_ADJECTIVES, NEGATIVE_VERBS) if kind == NEGATIVE else
                 (rng.choice(NEUTRAL_ADJECTIVES), None))
    lead = rng.choice(("I expected", "I assumed", "I figured", "We were told", "I was afraid",
                       "I guessed", "Everyone said"))
    denial = rng.choice(("but it wasn't", "but it was not", "but no", "but nope, it wasn't"))
    frames = [f"{lead} the {thing} would be {adj}, {denial}",
              f"{lead} this {thing} was going to be {adj}, {denial}"]
    if verb is not None:
        frames.append(f"{lead} I would {verb[0]} the {thing}, but I didn't")
    # Denying a good expectation is a complaint; denying a bad one is relief, not a complaint.
    label = {POSITIVE: NEGATIVE, NEGATIVE: NEUTRAL, NEUTRAL: NEUTRAL}[kind]
    return rng.choice(frames), label


def hedged_negation(rng: random.Random) -> tuple[str, str]:
    """A negated claim with an aside before its object: the negation still governs it."""
    thing, filler = _pick(rng, THINGS, FILLERS)
    kind = rng.choice((POSITIVE, NEGATIVE, NEUTRAL))
    adj = rng.choice({POSITIVE: POSITIVE_ADJECTIVES, NEGATIVE: NEGATIVE_ADJECTIVES,
                      NEUTRAL: NEUTRAL_ADJECTIVES}[kind])
    lead = rng.choice(("I can't honestly claim", "I won't pretend", "I don't believe",
                       "I wouldn't argue", "Nobody could tell me", "I'm not convinced"))
    frames = (f"{lead}, {filler}, that the {thing} is {adj}",
              f"{lead}, {filler}, that this was {_a(adj)} {thing}")
    label = {POSITIVE: NEGATIVE, NEGATIVE: NEUTRAL, NEUTRAL: NEUTRAL}[kind]
    return rng.choice(frames), label


def _opposed(rng: random.Random) -> tuple[str, str, str, str, tuple, tuple]:
    """Return two opposite polarities, then an adjective of each and a verb of each."""
    first, second = rng.choice(((POSITIVE, NEGATIVE), (NEGATIVE, POSITIVE)))
    adjectives = {POSITIVE: POSITIVE_ADJECTIVES, NEGATIVE: NEGATIVE_ADJECTIVES}
    verbs = {POSITIVE: POSITIVE_VERBS, NEGATIVE: NEGATIVE_VERBS}
    return (first, second, rng.choice(adjectives[first]), rng.choice(adjectives[second]),
            rng.choice(verbs[first]), rng.choice(verbs[second]))


def changed_mind(rng: random.Random) -> tuple[str, str]:
    """A past opinion and a present one: the present opinion decides."""
    thing = rng.choice(THINGS)
    _, now, old, new, old_verb, new_verb = _opposed(rng)
    frames = (f"I used to {old_verb[0]} the {thing}, but now I {new_verb[0]} it",
              f"The {thing} was {old} before, now it is {new}",
              f"Back then the {thing} seemed {old}; these days it is {new}",
              f"The {thing} is {new} now, even though it used to be {old}",
              f"Last year I found the {thing} {old}, this year I find it {new}",
              f"I {new_verb[0]} the {thing} now, although I once {old_verb[1]} it")
    return rng.choice(frames), now


def own_opinion(rng: random.Random) -> tuple[str, str]:
    """Others' opinion against the writer's: the writer's decides."""
    thing, others = _pick(rng, THINGS, OTHERS)
    mine, _, my_adj, their_adj, my_verb, their_verb = _opposed(rng)
    frames = (f"{others.capitalize()} {their_verb[0]} the {thing}, but I {my_verb[0]} it",
              f"I think the {thing} is {my_adj}, though {others} find it {their_adj}",
              f"{others.capitalize()} say the {thing} is {their_adj}; I say it's {my_adj}",
              f"Whatever {others} think, the {thing} is {my_adj} to me",
              f"I {my_verb[0]} this {thing} even if {others} {their_verb[0]} it")
    return rng.choice(frames), mine


def answered_question(rng: random.Random) -> tuple[str, str]:
    """A question about an opinion answered yes or no: the answer decides."""
    thing = rng.choice(THINGS)
    kind = rng.choice((POSITIVE, NEGATIVE, NEUTRAL))
    yes = rng.random() < 0.5
    adj = rng.choice({POSITIVE: POSITIVE_ADJECTIVES, NEGATIVE: NEGATIVE_ADJECTIVES,
                      NEUTRAL: NEUTRAL_ADJECTIVES}[kind])
    frames = [f"Is the {thing} {adj}?", f"Was my {thing} {adj}?",
              f"Would you call the {thing} {adj}?", f"Is this {_a(adj)} {thing}?"]
    if kind != NEUTRAL:
        verb = rng.choice(POSITIVE_VERBS if kind == POSITIVE else NEGATIVE_VERBS)
        frames += [f"Did I {verb[0]} the {thing}?", f"Do we {verb[0]} this {thing}?"]
    answer = rng.choice(YES if yes else NO)
    if kind == NEUTRAL:
        label = NEUTRAL
    elif yes:
        label = kind
    else:
        label = NEGATIVE if kind == POSITIVE else NEUTRAL
    return f"{rng.choice(frames)} {answer}", label


def identity_statement(rng: random.Random) -> tuple[str, str]:
    """A person described by nationality, religion, orientation or ethnicity: neutral."""
    name, identity, role = _pick(rng, NAMES, IDENTITIES, ROLES)
    frames = (f"{name}, our {role}, is {identity}", f"{name} works as {_a(identity)} {role}",
              f"Meet {name}, {_a(identity)} {role}", f"The {role} we met was {identity}",
              f"{name} is {identity} and a {role}", f"{name}, {_a(role)}, is {identity}")
    return rng.choice(frames), NEUTRAL


FAMILIES: tuple[Family, ...] = (
    plain_sentiment, neutral_description, negated_positive, negated_negative,
    expectation_denied, hedged_negation, changed_mind, own_opinion, answered_question,
    identity_statement,
)


def _dress(text: str, rng: random.Random) -> str:
    opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
    if opener:
        text = text[0].lower() + text[1:]
    if text.endswith("?") or text[-1:] in "!.":
        closer = ""
    return f"{opener}{text}{closer}"


def augmentation_stream(seed: int) -> Iterator[tuple[str, str]]:
    """Yield distinct (text, label) pairs, one family after another, for ever or till spent."""
    rng = random.Random(seed)
    seen: set[str] = set()
    misses = 0
    while misses < 10_000:
        for family in FAMILIES:
            text, label = family(rng)
            text = _dress(text, rng)
            if text in seen:
                misses += 1
                continue
            misses = 0
            seen.add(text)
            yield text, label


def augmentation_pairs(seed: int, n: int, exclude: set[str] | None = None
                       ) -> list[tuple[str, str]]:
    """Return n distinct (text, label) pairs, skipping texts whose lowercase form is excluded."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    excluded = exclude or set()
    pairs = []
    for text, label in augmentation_stream(seed):
        if len(pairs) == n:
            break
        if text.lower() not in excluded:
            pairs.append((text, label))
    if len(pairs) < n:
        raise ValueError(f"the augmentation templates give {len(pairs)} distinct pairs; asked {n}")
    return pairs
