"""How often an LLM reads a viewer's request right: per-field accuracy of intents over a labelled set.

``labelled_requests.json`` holds free-text requests, each with the intent a careful human reads
in it: the moods and lengths that would be right (lists: "something light" is fairly "light" or
"funny"; "any" when the request says nothing about it), the genre it names and the genre it rules
out ("none" when there is none). A genre is labelled only where ``validate.mentions`` sees it in
the request, so every label can be reached through the guards.

What is scored is the intent the re-ranker uses (``intent_scoring.score_intent``, or
``validate.parse_intent`` for a generated answer), guards applied, not the raw answer. An answer with nothing usable (``None``) leaves the W&D order,
so it counts as mood "any", no genre, nothing avoided, length "any": right for a request that
gives no direction, wrong in every field the request does give.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from serving.rerank.intent import INTENT_FIELDS as FIELDS
from serving.rerank.intent import LENGTHS, MOODS, NO_GENRE, Intent
from streamrec.vocabulary import GENRES

LABELLED_PATH = Path(__file__).with_name("labelled_requests.json")


@dataclass(frozen=True)
class LabelledRequest:
    request: str
    moods: tuple[str, ...]  # any of them is right
    genre: str | None
    avoid_genre: str | None
    lengths: tuple[str, ...]  # any of them is right


def _choices(entry: dict, field: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = entry["expect"][field]
    if not isinstance(values, list) or not values or any(v not in allowed for v in values):
        raise ValueError(f"{field} must be a non-empty list of {', '.join(allowed)}, got {values!r}")
    return tuple(values)


def _genre(entry: dict, field: str) -> str | None:
    value = entry["expect"][field]
    if value != NO_GENRE and value not in GENRES:
        raise ValueError(f"{field} must be {NO_GENRE} or one of {', '.join(GENRES)}, got {value!r}")
    return None if value == NO_GENRE else value


def load_labelled(path: str | Path = LABELLED_PATH) -> list[LabelledRequest]:
    """The labelled requests; a ValueError names the first entry that is malformed or off-vocabulary."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    labelled = []
    for n, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("request"), str) or not entry["request"].strip():
                raise ValueError("expected {\"request\": non-empty text, \"expect\": {...}}")
            if not isinstance(entry.get("expect"), dict) or set(entry["expect"]) != set(FIELDS):
                raise ValueError(f"expect must have exactly the fields {', '.join(FIELDS)}")
            label = LabelledRequest(entry["request"], _choices(entry, "mood", MOODS), _genre(entry, "genre"),
                                    _genre(entry, "avoid_genre"), _choices(entry, "preferred_length", LENGTHS))
        except ValueError as e:
            request = entry.get("request") if isinstance(entry, dict) else None
            raise ValueError(f"{path}: entry {n} ({request!r}): {e}") from None
        labelled.append(label)
    return labelled


def field_hits(intent: Intent | None, label: LabelledRequest) -> dict[str, bool]:
    """Per field, whether the intent is right; ``None`` (nothing usable) is the neutral intent."""
    intent = intent or Intent()
    return {"mood": intent.mood in label.moods, "genre": intent.genre == label.genre,
            "avoid_genre": intent.avoid_genre == label.avoid_genre,
            "preferred_length": intent.preferred_length in label.lengths}


def accuracy(pairs: Iterable[tuple[LabelledRequest, Intent | None]]) -> dict:
    """Fraction right per field, "all_fields" (every field right) and "n"."""
    hits = [field_hits(intent, label) for label, intent in pairs]
    if not hits:
        raise ValueError("no labelled requests to score")
    result: dict = {f: sum(h[f] for h in hits) / len(hits) for f in FIELDS}
    result["all_fields"] = sum(all(h.values()) for h in hits) / len(hits)
    result["n"] = len(hits)
    return result
