"""The ``response_format`` JSON schemas the LLM must answer in (pure).

Kept to the subset both OpenAI's strict mode and llama.cpp's grammar converter enforce:
every property required, no additional properties, enums, ``pattern`` and ``maxItems``.
Not ``maxLength`` (OpenAI strict rejects it) and not ``minimum``/``maximum`` on numbers
(llama.cpp ignores them), hence a reason pattern and an enum of weights. The enums do the
real work: a constrained decoder cannot emit an id that is not a candidate or an unknown genre.
"""
from __future__ import annotations

from typing import Sequence

from features.context import GENRES
from serving.rerank.intent import LENGTHS, MOODS

MAX_REASON_CHARS = 80
# Plain words and punctuation only: no quotes or backslashes, so a grammar-constrained string
# always stays valid JSON, and no newlines.
REASON_PATTERN = rf"^[A-Za-z0-9 ,.'!?:;()&/%+-]{{0,{MAX_REASON_CHARS}}}$"
# Listwise answers rank at most this many: every entry costs output tokens, and the rest keep
# their W&D order after the ranked ones.
MAX_RANKED = 10
MAX_GENRE_WEIGHTS = 4
MAX_EXCLUDED_GENRES = 3
GENRE_WEIGHT_VALUES = (1, 0.5, -0.5, -1)


def _object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _reason() -> dict:
    return {"type": "string", "pattern": REASON_PATTERN}


def _format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def listwise_format(candidate_ids: Sequence[str]) -> dict:
    entry = _object({"id": {"type": "string", "enum": list(candidate_ids)}, "reason": _reason()})
    ranked = min(MAX_RANKED, len(candidate_ids))
    return _format("rerank", _object({"ranking": {"type": "array", "items": entry, "minItems": 1, "maxItems": ranked}}))


def intent_format() -> dict:
    genre = {"type": "string", "enum": list(GENRES)}
    weight = _object({"genre": genre, "weight": {"type": "number", "enum": list(GENRE_WEIGHT_VALUES)}})
    return _format("intent", _object({
        "genre_weights": {"type": "array", "items": weight, "maxItems": MAX_GENRE_WEIGHTS},
        "mood": {"type": "string", "enum": list(MOODS)},
        "preferred_length": {"type": "string", "enum": list(LENGTHS)},
        "exclude_genres": {"type": "array", "items": genre, "maxItems": MAX_EXCLUDED_GENRES},
        "reason": _reason(),
    }))
