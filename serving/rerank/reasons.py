"""The reasons viewers read: built from facts, and checked against them (pure).

A reason states only what is true of its item (genres, running time, year) and of the viewer's
situation (day-part, device) or request: a mood is how the viewer feels, not a fact of the item,
and a template that names the mood's genre can contradict the item it is shown on.
``fact_reason`` builds such a line; ``false_claims`` lists what a reason (the LLM's own, in
listwise mode) says that its item contradicts.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from serving.rerank.context import Candidate, LiveContext
from serving.rerank.intent import DAYPART_WORDS, DEVICE_WORDS, GENRE_WORDS
from serving.rerank.prompt import neutralize, request_text
from serving.rerank.schema import MAX_REASON_CHARS
from streamrec.vocabulary import GENRES

MAX_GENRES = 2
MAX_QUOTE_CHARS = 40
# "short" and "long" as the intent prompt defines them for the LLM.
SHORT_UNDER_MINUTES = 95
LONG_OVER_MINUTES = 125
# A running time in a reason may be rounded, but not further off than this.
MINUTES_TOLERANCE = 5

# GENRE_WORDS that do not claim a genre in a reason: tone words (a thriller can be "scary" or
# "funny"), everyday or subject words ("family drama" is drama, Toy Story has a cowboy and
# Stitch is an alien, "magic" and "detective" fit several genres). Flagging them would replace
# true reasons.
_NOT_CLAIMS = frozenset({
    "family", "kid", "kids", "child", "children", "funny", "laugh", "humor", "humour", "doc", "true story",
    "magic", "dragon", "scary", "gore", "gory", "singing", "romantic", "space", "alien", "robot", "suspense",
    "cowboy", "detective",
})
# Matched without a plural: "Star Wars" is no war film.
_SINGULAR_ONLY = frozenset({"war"})


def _claim_pattern(words: Sequence[str]) -> re.Pattern:
    """Any of ``words`` as a whole word, case-insensitive, also in the plural."""
    alternatives = sorted(map(_with_plural, words), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def _with_plural(word: str) -> str:
    if word in _SINGULAR_ONLY:
        return re.escape(word)
    if word.endswith("y"):
        return re.escape(word[:-1]) + "(?:y|ies)"
    return re.escape(word) + "(?:e?s)?"


_GENRE_CLAIMS = {g: _claim_pattern([w for w in {g.lower(), *GENRE_WORDS[g]} if w not in _NOT_CLAIMS]) for g in GENRES}
# A 4-digit year as a whole word: "1990s" is a decade and does not count.
_YEAR = re.compile(r"(?<!\w)(19\d\d|20\d\d)(?!\w)")
_MINUTES = re.compile(r"(?<![\w.])(\d{1,3})\s*-?\s*(?:min|mins|minute|minutes)(?!\w)", re.IGNORECASE)


def false_claims(reason: str, candidate: Candidate) -> list[str]:
    """What ``reason`` says that ``candidate`` contradicts, or that cannot be checked (a year or a
    running time the item does not have): a genre it lacks, another year, a running time more
    than MINUTES_TOLERANCE off. Empty when the reason is true of the item."""
    text = reason.replace("’", "'")
    found = [f"says {m.group(0)!r}, but the item is not {genre}"
             for genre, pattern in _GENRE_CLAIMS.items() if genre not in candidate.genres
             for m in pattern.finditer(text)]
    found += [f"says {year}, but the item is from {candidate.year or 'an unknown year'}"
              for year in _YEAR.findall(text) if int(year) != candidate.year]
    minutes = _minutes(candidate)
    runs = "an unknown time" if minutes is None else f"{minutes:.0f} min"
    found += [f"says {m.group(0)!r}, but the item runs {runs}" for m in _MINUTES.finditer(text)
              if minutes is None or abs(int(m.group(1)) - minutes) > MINUTES_TOLERANCE]
    return found


def fact_reason(candidate: Candidate, context: LiveContext, request: str | None = None,
                matched_genres: Sequence[str] = (), length: str | None = None) -> str:
    """A short line of facts: the item's genres (``matched_genres`` first), its running time when a
    ``length`` is preferred (else its year), then the request quoted or else the context.

    "" when the item has no known genre, year or running time: a line about the viewer alone
    would say nothing about the item.
    """
    facts = ", ".join(_item_facts(candidate, matched_genres, length))
    if not facts:
        return ""
    quoted = _quote(request, MAX_REASON_CHARS - len(facts) - len(': matches ""'))
    # The quote is the viewer's text: used only when it claims nothing the item contradicts.
    if quoted and not false_claims(quoted, candidate):
        return f'{facts}: matches "{quoted}"'
    situation = _situation(context)
    return f"{facts}, {situation}" if situation else facts


def _minutes(candidate: Candidate) -> float | None:
    d = candidate.duration_minutes
    return d if d is not None and d > 0 else None


def _item_facts(candidate: Candidate, matched_genres: Sequence[str], length: str | None) -> list[str]:
    """The genres, then the running time (with "short"/"long" when it is) or else the year."""
    own = [g for g in candidate.genres if g in GENRES]
    genres = [g for g in matched_genres if g in own] + [g for g in own if g not in matched_genres]
    facts = ["/".join(genres[:MAX_GENRES])] if genres else []
    minutes = _minutes(candidate)
    if length not in (None, "any") and minutes is not None:
        facts.append(f"{minutes:.0f} min")
        if length == "short" and minutes < SHORT_UNDER_MINUTES or length == "long" and minutes > LONG_OVER_MINUTES:
            facts.append(length)
    elif candidate.year is not None:
        facts.append(str(candidate.year))
    return facts


def _quote(request: str | None, budget: int) -> str:
    """The request, neutralized and cut to the budget, with its double quotes made single."""
    text = request_text(request)
    if text is None:
        return ""
    return neutralize(text.replace('"', "'"), min(budget, MAX_QUOTE_CHARS))


def _situation(context: LiveContext) -> str:
    """'for late night on your phone', from the day-part and the device, each when known."""
    words = [f"for {DAYPART_WORDS[context.daypart]}" if context.daypart in DAYPART_WORDS else "",
             DEVICE_WORDS.get(context.device or "", "")]
    return " ".join(w for w in words if w)
