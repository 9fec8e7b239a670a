"""Scored intent decoding: each field's value read from the model's next-token probabilities.

Generating the intent's JSON costs a decoding step per token (~45 tokens, ~10 s on 2 cores for a
1.5B model). Here the answer is prefilled up to a field's value (``{"mood": "``) and the model is
asked for one token with its top log-probabilities; every allowed value is scored by the probability
of the tokens that start it, and the best one is taken (FIRST, Reddy et al. 2024, ranks from
first-token logits the same way). The fields are asked independently, so every call shares the
prompt up to the prefill and the server's prompt cache reads the request once: a decision is one
prompt read plus a forward pass per field (and per shared piece split, below); a request's length
is calibrated against the same context without the request, read once per situation.

A token may start several values ("Com" could begin "Comedy" or "Community"); when such a shared
piece carries more probability than any value it would decide between, the piece is typed and the
next token asked for (at most ``MAX_DEPTH`` times). Genres are asked only among those the request
names (``validate.mentions``), as ``parse_intent`` would keep no other, and not at all when it
names none.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from serving.rerank.intent import INTENT_FIELDS as FIELDS
from serving.rerank.intent import LENGTHS, MOODS, NO_GENRE, Intent
from serving.rerank.validate import InvalidOutput, mentions
from streamrec.vocabulary import GENRES

MAX_DEPTH = 3
# Fields with a neutral first value ("any") that a request must earn: how much likelier, relative to the
# context alone, the request must make a value for it to be taken. Only the length: with the prompt's worked
# examples the 0.5B says "any" mood when a request has none, but prefers "long" or "medium" whatever it reads; a prior share below MIN_PRIOR_SHARE counts
# as that (a value the model never says unprompted is not infinitely lifted by a trace of probability).
CALIBRATED = ("preferred_length",)
PRIOR_RATIO = 2.0
MIN_PRIOR_SHARE = 0.001

# (prefill) -> the next token's top candidates as (piece, log-probability)
NextTokens = Callable[[str], Sequence[tuple[str, float]]]


@dataclass(frozen=True)
class FieldChoice:
    value: str
    mass: float  # the probability the model put on it
    probability: float  # its share of the probability that fell on allowed values
    calls: int


def prefill(field: str) -> str:
    """The answer so far when the model is asked for ``field``'s value."""
    return f'{{"{field}": "'


def field_options(field: str, request: str | None) -> tuple[str, ...]:
    """The values ``field`` may take for this request (one value: no need to ask)."""
    if field == "mood":
        return MOODS
    if field == "preferred_length":
        return LENGTHS
    return (NO_GENRE, *(g for g in GENRES if request and mentions(request, g)))


def tally(top: Sequence[tuple[str, float]], options: Sequence[str], typed: str = "") -> tuple[dict, dict]:
    """Probability per option from one step's top tokens, after ``typed``; and the pieces that start
    several options, as {the text so far, as written: (its probability, the options)}. Case is ignored (the model writes
    "com" for "Comedy" too); a piece carrying the closing quote must end an option exactly."""
    scores = {o: 0.0 for o in options}
    shared: dict[str, tuple[float, tuple[str, ...]]] = {}
    for piece, logprob in top:
        written = typed + piece if typed else piece.lstrip()  # as the model wrote it: typed back as such
        text = written.lower()
        if not text:
            continue
        p = math.exp(logprob)
        if '"' in text:
            value = text.split('"', 1)[0]
            matches = tuple(o for o in options if o.lower() == value)
        else:
            matches = tuple(o for o in options if o.lower().startswith(text))
        if len(matches) == 1:
            scores[matches[0]] += p
        elif matches:
            old = shared.get(written, (0.0, matches))
            shared[written] = (old[0] + p, matches)
    return scores, shared


def field_masses(ask: NextTokens, field: str, options: Sequence[str]) -> tuple[dict[str, float], int]:
    """The probability the model puts on each of ``options`` for ``field``, and the calls it took."""
    masses, calls = _masses(ask, field, options, "", 0)
    if sum(masses.values()) <= 0:
        raise InvalidOutput("invalid_output", f"no allowed {field} among the model's likeliest next tokens")
    return masses, calls


def choose(masses: Mapping[str, float], calls: int, prior: Mapping[str, float] | None = None) -> FieldChoice:
    """The likeliest value; with ``prior`` (the masses for the context alone, no request), the value the request
    makes likeliest relative to it, if the request at least PRIOR_RATIO-folds its share, else the neutral first
    value ("any"). A small model has favourite answers ("exciting", "long") whatever it reads, and rarely says
    "any"; dividing by its answer without the request cancels the favourites (contextual calibration, Zhao et
    al. 2021, "Calibrate Before Use")."""
    options = list(masses)
    total = sum(masses.values())
    best = max(options, key=lambda o: (masses[o], -options.index(o)))
    if prior is not None:
        prior_total = sum(prior.values()) or 1.0
        lift = {o: (masses[o] / total) / max(prior.get(o, 0.0) / prior_total, MIN_PRIOR_SHARE) for o in options[1:]}
        best = max(options[1:], key=lambda o: (lift[o], -options.index(o)))
        best = best if lift[best] >= PRIOR_RATIO else options[0]
    return FieldChoice(best, masses[best], masses[best] / total, calls)


def _masses(ask: NextTokens, field: str, options: Sequence[str], typed: str, depth: int) -> tuple[dict, int]:
    """Probability per option after ``typed``, and the calls it took. A shared piece heavier than every
    value it could decide between is typed and its mass shared out by the next token's probabilities."""
    scores, shared = tally(ask(prefill(field) + typed), options, typed)
    calls = 1
    for text, (mass, matches) in sorted(shared.items(), key=lambda kv: -kv[1][0]):
        if depth + 1 >= MAX_DEPTH or mass <= max(scores.values()):
            continue
        sub, sub_calls = _masses(ask, field, matches, text, depth + 1)
        calls += sub_calls
        total = sum(sub.values())
        for option, share in sub.items():
            scores[option] += mass * share / total if total > 0 else 0.0
    return scores, calls


def context_masses(ask: NextTokens) -> dict[str, dict[str, float]]:
    """The CALIBRATED fields' masses for a prompt without a request: the prior ``score_intent`` divides by."""
    return {field: field_masses(ask, field, field_options(field, None))[0] for field in CALIBRATED}


def score_intent(ask: NextTokens, request: str | None,
                 prior: Callable[[], Mapping[str, Mapping[str, float]]] | None = None) -> tuple[Intent, dict[str, FieldChoice]]:
    """The intent read field by field, and each field's choice; ``prior`` gives ``context_masses`` for the
    same context without the request (asked only when there is a request). A genre both wanted and avoided
    keeps the reading the model put more probability on (a small model seldom answers "none" for a genre the
    request names, so each field alone would name it); ``Intent.may_avoid`` decides what may be avoided, as in
    ``parse_intent``."""
    priors = prior() if prior is not None and request else {}
    choices = {}
    for field in FIELDS:
        options = field_options(field, request)
        if len(options) == 1:
            choices[field] = FieldChoice(options[0], 1.0, 1.0, 0)
        else:
            choices[field] = choose(*field_masses(ask, field, options), priors.get(field))
    genre, avoid = choices["genre"].value, choices["avoid_genre"].value
    if genre != NO_GENRE and genre == avoid:
        if choices["genre"].mass >= choices["avoid_genre"].mass:
            avoid = NO_GENRE
        else:
            genre = NO_GENRE
    intent = Intent(mood=choices["mood"].value, genre=None if genre == NO_GENRE else genre,
                    preferred_length=choices["preferred_length"].value, asked=bool(request))
    if avoid != NO_GENRE and intent.may_avoid(avoid):
        intent = dataclasses.replace(intent, avoid_genre=avoid)
    if intent.is_empty():
        raise InvalidOutput("empty", "the intent asks for nothing")
    return intent, choices
