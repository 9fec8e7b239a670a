"""Checking what the LLM answered, and the one gate every re-ranked list passes through (pure).

``complete_order`` is that gate: whatever order is proposed, the result holds exactly the
candidates, each once; nothing else can reach the API.

Parsing is tolerant about the wrapping and strict about the content: the first JSON object
in the text is taken, so code fences or a sentence around it (servers that ignore
``response_format`` add them) do not cost a re-rank, while every field is then checked
against the candidates and vocabularies. Text without a JSON object is a ``refusal`` when it
reads like one, else ``invalid_output``; an answer that carries nothing usable is ``empty``.
Text longer than ``MAX_ANSWER_CHARS`` or nesting deeper than ``MAX_ANSWER_DEPTH`` is
``invalid_output`` before any decoding, so no answer can exhaust the decoder's recursion.

Reasons are plain text, whatever the LLM returns: no markup (tags, entities, markdown, URLs),
no ids, one line, length-capped (``clean_reason``); and true of their item: a reason naming a
genre, year or running time the item does not have is replaced by one of facts (``reasons``).
"""
from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from serving.rerank.context import Candidate, LiveContext
from serving.rerank.intent import GENRE_WORDS, LENGTHS, MOODS, Intent
from serving.rerank.reasons import fact_reason, false_claims
from serving.rerank.schema import (
    MAX_ANSWER_CHARS,
    MAX_ANSWER_DEPTH,
    MAX_INTENT_REASON_CHARS,
    MAX_REASON_CHARS,
)
from streamrec.vocabulary import GENRES

_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t|i cannot|i'?m unable|i am unable|"
    r"i won'?t|as an ai)\b",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)?")
_DECODER = json.JSONDecoder()
# What a JSON decoder's nesting depends on: an escape (which may hide a quote), a quote, a bracket.
_JSON_TOKEN = re.compile(r'\\.|[][{}"]', re.DOTALL)

# Markup, removed in this order (a tag's attributes may hold URLs, link text may hold tags).
_MARKUP = [
    (re.compile(r"<(script|style)\b.*?(?:</\1\s*>|\Z)", re.IGNORECASE | re.DOTALL), ""),  # with its body
    (re.compile(r"<[A-Za-z/!?][^<>]*(?:>|\Z)"), ""),  # a tag, also one left open at the end
    (re.compile(r"!?\[([^\[\]]*)\]\([^()]*\)"), r"\1"),  # a markdown link or image: its text only
    (re.compile(r"(?:\b[A-Za-z][A-Za-z0-9+.-]*://|\bwww\.)\S*", re.IGNORECASE), ""),  # a URL
]
# Besides letters, digits and spaces, the only characters a reason keeps.
_PUNCTUATION = frozenset(".,;:!?'\"()&/%+-–—‘’“”")
_ENTITY = re.compile(r"&#?\w+;")
# An id-like token: letters then digits, as a whole word (i00042, ml1193, ml7, u0001, tt0111161).
# "1990s", "80s", "2 hours", "Se7en", "3D" stay; "T2" or "MP3" go too, as the price of a simple rule.
_ID_LIKE = re.compile(r"\b[^\W\d_]+\d+\b")


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
    if len(text) > MAX_ANSWER_CHARS:
        raise InvalidOutput("invalid_output", f"answer of {len(text)} characters, at most {MAX_ANSWER_CHARS}")
    depth = _nesting(text)
    if depth > MAX_ANSWER_DEPTH:
        raise InvalidOutput("invalid_output", f"answer nested {depth} deep, deeper than {MAX_ANSWER_DEPTH}")
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


def _nesting(text: str) -> int:
    """How deep a JSON decoder starting at any "{" of ``text`` could nest, bounded from above
    without recursion. Brackets in strings do not count, but which brackets are in strings
    depends on where decoding starts (a stray quote in the prose before the object shifts every
    string after it), so both readings of the quotes are followed, each with its own depth
    (-1: no decoding reads the text so)."""
    outside = inside = deepest = -1
    for token in _JSON_TOKEN.findall(text):
        if token[0] == "\\":
            outside = -1  # a backslash ends decoding outside a string; inside one it escapes a character
        if token[-1] == "{":
            outside = max(outside, 0)  # decoding may start at any "{"
        if token == '"':
            outside, inside = inside, outside
        elif outside >= 0 and token[-1] in "[{":
            outside += 1
        elif outside >= 0 and token[-1] in "]}":
            outside = max(outside - 1, 0)
        deepest = max(deepest, outside)
    return deepest


def _plain(text: str) -> str:
    """``text`` without markup: entities decoded (so encoded tags go as tags), then _MARKUP
    removed, then every character but letters, digits, whitespace and _PUNCTUATION dropped, then
    entities left over (double-encoded, or formed by the drop) removed."""
    text = unicodedata.normalize("NFKC", html.unescape(text))  # NFKC also turns fullwidth < > into ASCII
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    # Dropped, not spaced, so that "i_42" or "i`42`" still reads as the id it is, and goes.
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isalnum() or ch.isspace() or ch in _PUNCTUATION)
    return _ENTITY.sub(" ", text)


def _without_ids(text: str, ids: Sequence[str]) -> str:
    """``text`` without the ``ids`` nor _ID_LIKE tokens, spaces collapsed, punctuation debris stripped."""
    if ids:
        text = re.sub(r"(?<!\w)(?:" + "|".join(map(re.escape, ids)) + r")(?!\w)", "", text)
    return _SPACE.sub(" ", _ID_LIKE.sub("", text)).strip(" ,;:-")


def clean_reason(text: Any, candidate_ids: Iterable[str], max_chars: int = MAX_REASON_CHARS) -> str:
    """Plain text a viewer can read, whatever the LLM returned: no markup (``_plain``), no ids
    (the candidates' and any _ID_LIKE token: they mean nothing to viewers and would let an answer
    point at other items), one line, at most ``max_chars`` (cut with "…")."""
    if not isinstance(text, str):
        return ""
    ids = sorted(set(candidate_ids), key=len, reverse=True)
    text = _without_ids(_plain(text), ids)
    if len(text) > max_chars:
        # Again after the cut: "abc123d" cut to "abc123…" reads as an id.
        text = _without_ids(text[: max_chars - 1].rstrip() + "…", ids)
    return text


def parse_ranking(text: str | None, candidates: Sequence[Candidate], refusal: str | None = None, *,
                  context: LiveContext | None = None, request: str | None = None) -> list[tuple[str, str]]:
    """A listwise answer as ``(item_id, reason)`` best first: unknown ids and repeats dropped, and a
    reason that its item contradicts (``false_claims``) replaced by one of facts, with ``context``
    (unknown when None) and ``request``."""
    answer = parse_object(text, refusal)
    entries = answer.get("ranking")
    if not isinstance(entries, list):
        raise InvalidOutput("invalid_output", "no 'ranking' list")
    if not entries:
        raise InvalidOutput("empty", "empty ranking")
    ids = [c.item_id for c in candidates]
    by_id, seen, ranked = {c.item_id: c for c in candidates}, set(), []
    for entry in entries:
        item_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(item_id, str) and item_id in by_id and item_id not in seen:
            seen.add(item_id)
            reason = clean_reason(entry.get("reason"), ids)
            if false_claims(reason, by_id[item_id]):
                reason = fact_reason(by_id[item_id], context or LiveContext(), request)
            ranked.append((item_id, reason))
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
    mood is about is never avoided (``Intent.may_avoid``)."""
    answer = parse_object(text, refusal)
    mood, length = answer.get("mood"), answer.get("preferred_length")
    genre, avoid = answer.get("genre"), answer.get("avoid_genre")
    intent = Intent(
        mood=mood if mood in MOODS else "any",
        genre=genre if genre in GENRES and request and mentions(request, genre) else None,
        preferred_length=length if length in LENGTHS else "any",
        reason=clean_reason(answer.get("reason"), (), MAX_INTENT_REASON_CHARS),
        asked=bool(request),
    )
    if avoid in GENRES and request and mentions(request, avoid) and intent.may_avoid(avoid):
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
