"""The ``response_format`` JSON schemas the LLM must answer in (pure).

Kept to the subset both OpenAI's strict mode and llama.cpp's grammar converter enforce:
every property required, no additional properties, enums, ``pattern`` and ``maxItems``
(not ``maxLength``, which OpenAI strict rejects, hence a reason pattern). The enums do the
real work: a constrained decoder cannot emit an id that is not a candidate or an unknown genre.

The intent is a few single choices rather than lists of weighted genres: a 0.5B model asked
for genre lists mostly repeated the first enum values or the genres of the viewing history,
while it picked a fitting mood, and the genre a request names, reliably enough.
"""
from __future__ import annotations

from collections.abc import Sequence

from serving.rerank.intent import LENGTHS, MOODS, NO_GENRE
from streamrec.vocabulary import GENRES

MAX_REASON_CHARS = 80
# The intent's own reason is for logs and the API, and every character costs a decoding step.
MAX_INTENT_REASON_CHARS = 48
# Listwise answers rank at most this many: every entry costs output tokens, and the rest keep
# their W&D order after the ranked ones.
MAX_RANKED = 10
# Bounds on an answer before it is decoded (longer or deeper is "invalid_output"): a listwise answer
# is at most ~48 tokens x 20 items and nests 4 deep, so these only stop hostile or runaway output.
MAX_ANSWER_CHARS = 32_768
MAX_ANSWER_DEPTH = 16


def reason_pattern(max_chars: int) -> str:
    """Plain words and punctuation only: no quotes or backslashes, so a grammar-constrained string
    always stays valid JSON, and no newlines."""
    return rf"^[A-Za-z0-9 ,.'!?:;()&/%+-]{{0,{max_chars}}}$"


def _object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def listwise_format(candidate_ids: Sequence[str]) -> dict:
    entry = _object({"id": {"type": "string", "enum": list(candidate_ids)},
                     "reason": {"type": "string", "pattern": reason_pattern(MAX_REASON_CHARS)}})
    ranked = min(MAX_RANKED, len(candidate_ids))
    return _format("rerank", _object({"ranking": {"type": "array", "items": entry, "minItems": 1, "maxItems": ranked}}))


def intent_format() -> dict:
    genre = {"type": "string", "enum": [NO_GENRE, *GENRES]}
    return _format("intent", _object({
        "mood": {"type": "string", "enum": list(MOODS)},
        "genre": genre,
        "avoid_genre": genre,
        "preferred_length": {"type": "string", "enum": list(LENGTHS)},
        "reason": {"type": "string", "pattern": reason_pattern(MAX_INTENT_REASON_CHARS)},
    }))
