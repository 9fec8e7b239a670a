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
import re
import unicodedata
from dataclasses import replace
from typing import Any, Iterable, Sequence

from streamrec.vocabulary import GENRES
from serving.rerank.context import Candidate
from serving.rerank.intent import GENRE_WORDS, LENGTHS, MOODS, Intent
from serving.rerank.schema import MAX_INTENT_REASON_CHARS, MAX_REASON_CHARS

_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t|i cannot|i'?m unable|i am unable|"
    r"i won'?t|as an ai)\b",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)?")
_DECODER = json.JSONDecoder()


class InvalidOutput(ValueError):
    """An unusable answer; ``reason`` is "invalid_output", "refusal" or "empty"."""

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


def clean_reason(text: Any, candidate_ids: Iterable[str], max_chars: int = MAX_REASON_CHARS) -> str:
    """One line, at most ``max_chars``, with no item ids in it (they mean nothing to viewers
    and would let an answer point at other items)."""
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    ids = sorted(set(candidate_ids), key=len, reverse=True)
    if ids:
        text = re.sub(r"(?<![\w-])(?:" + "|".join(map(re.escape, ids)) + r")(?![\w-])", "", text)
    text = _SPACE.sub(" ", text).strip(" ,;:-")
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


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


def mentions(request: str, genre: str) -> bool:
    """True when the request contains one of the genre's words (GENRE_WORDS), as whole words."""
    text = " " + " ".join(_WORD.findall(request.lower())) + " "
    return any(f" {w}{end} " in text for w in GENRE_WORDS[genre] for end in ("", "s", "es"))


def parse_intent(text: str | None, request: str | None, refusal: str | None = None) -> Intent:
    """An intent answer, with unknown values as "none"/"any", and guards against small-model noise:
    the genre and the avoided genre only count when the request mentions them, and a genre the
    mood wants is never avoided ("a scary movie" must not avoid horror)."""
    answer = parse_object(text, refusal)
    mood, length = answer.get("mood"), answer.get("preferred_length")
    genre, avoid = answer.get("genre"), answer.get("avoid_genre")
    intent = Intent(
        mood=mood if mood in MOODS else "any",
        genre=genre if genre in GENRES and request and mentions(request, genre) else None,
        preferred_length=length if length in LENGTHS else "any",
        reason=clean_reason(answer.get("reason"), (), MAX_INTENT_REASON_CHARS),
    )
    if avoid in GENRES and request and mentions(request, avoid) and avoid not in intent.genre_weights():
        intent = replace(intent, avoid_genre=avoid)
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
