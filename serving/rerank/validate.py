"""Checking what the LLM answered, and the one gate every re-ranked list passes through (pure).

``complete_order`` is that gate: whatever order is proposed, the result holds exactly the
candidates, each once; nothing else can reach the API.

Parsing is tolerant about the wrapping and strict about the content: the first JSON object
in the text is taken, so code fences or a sentence around it (servers that ignore
``response_format`` add them) do not cost a re-rank, while every field is then checked
against the candidates and vocabularies. Text without a JSON object is a ``refusal`` when it
reads like one, else ``invalid_output``; an answer that carries nothing usable is ``empty``.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any, Iterable, Sequence

from features.context import GENRES
from serving.rerank.context import Candidate
from serving.rerank.intent import LENGTHS, MOODS, Intent
from serving.rerank.schema import MAX_EXCLUDED_GENRES, MAX_GENRE_WEIGHTS, MAX_REASON_CHARS

REASONS = ("invalid_output", "refusal", "empty")

_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t|i cannot|i'?m unable|i am unable|"
    r"i won'?t|as an ai)\b",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")
_DECODER = json.JSONDecoder()


class InvalidOutput(ValueError):
    """An unusable answer; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_object(text: str | None, refusal: str | None = None) -> dict:
    """The first JSON object in ``text``; ``refusal`` is the API's own refusal field, if any."""
    if refusal:
        raise InvalidOutput("refusal", refusal[:200])
    if text is None or not text.strip():
        raise InvalidOutput("empty", "no content")
    start = text.find("{")
    while start != -1:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    if _REFUSAL.search(text):
        raise InvalidOutput("refusal", text.strip()[:200])
    raise InvalidOutput("invalid_output", f"no JSON object in {text.strip()[:200]!r}")


def clean_reason(text: Any, candidate_ids: Iterable[str]) -> str:
    """One line, at most MAX_REASON_CHARS, with no item ids in it (they mean nothing to viewers
    and would let an answer point at other items)."""
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    ids = sorted(set(candidate_ids), key=len, reverse=True)
    if ids:
        text = re.sub(r"(?<![\w-])(?:" + "|".join(map(re.escape, ids)) + r")(?![\w-])", "", text)
    text = _SPACE.sub(" ", text).strip(" ,;:-")
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1].rstrip() + "…"


def parse_ranking(text: str | None, candidates: Sequence[Candidate], refusal: str | None = None) -> list[tuple[str, str]]:
    """A listwise answer as ``(item_id, reason)`` best first: unknown ids and repeats dropped."""
    answer = parse_object(text, refusal)
    entries = answer.get("ranking")
    if not isinstance(entries, list):
        raise InvalidOutput("invalid_output", "no 'ranking' list")
    if not entries:
        raise InvalidOutput("empty", "empty ranking")
    ids = [c.item_id for c in candidates]
    known, seen, ranked = set(ids), set(), []
    for entry in entries:
        item_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(item_id, str) and item_id in known and item_id not in seen:
            seen.add(item_id)
            ranked.append((item_id, clean_reason(entry.get("reason"), ids)))
    if not ranked:
        raise InvalidOutput("invalid_output", "no candidate id in the ranking")
    return ranked


def _weight(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return min(max(float(value), -1.0), 1.0)


def parse_intent(text: str | None, refusal: str | None = None) -> Intent:
    """An intent answer with unknown genres dropped, weights clipped to -1..1 and unknown enums as "any"."""
    answer = parse_object(text, refusal)
    weights: dict[str, float] = {}
    raw = answer.get("genre_weights")
    for entry in raw if isinstance(raw, list) else ():
        if not isinstance(entry, dict) or entry.get("genre") not in GENRES or entry["genre"] in weights:
            continue
        weight = _weight(entry.get("weight"))
        if weight:  # a zero weight says nothing
            weights[entry["genre"]] = weight
        if len(weights) == MAX_GENRE_WEIGHTS:
            break
    raw = answer.get("exclude_genres")
    excluded = [g for g in raw if g in GENRES] if isinstance(raw, list) else []
    mood, length = answer.get("mood"), answer.get("preferred_length")
    intent = Intent(
        genre_weights=weights,
        mood=mood if mood in MOODS else "any",
        preferred_length=length if length in LENGTHS else "any",
        exclude_genres=frozenset(excluded[:MAX_EXCLUDED_GENRES]),
        reason=clean_reason(answer.get("reason"), ()),
    )
    if intent.is_empty():
        raise InvalidOutput("empty", "the intent asks for nothing")
    return intent


def complete_order(ranked: Iterable[tuple[str, str]], candidates: Sequence[Candidate]) -> list[tuple[Candidate, str]]:
    """Exactly the candidates: the proposed ones first (non-candidates and repeats skipped),
    then the rest in W&D order with no reason."""
    by_id = {c.item_id: c for c in candidates}
    out, seen = [], set()
    proposed = [(i, r) for i, r in ranked if isinstance(i, str) and i in by_id]
    for item_id, reason in proposed + [(c.item_id, "") for c in candidates]:
        if item_id not in seen:
            seen.add(item_id)
            out.append((by_id[item_id], reason))
    return out
