"""The item catalog (items.jsonl, as the generator and the MovieLens converter write it): its one parser, and
its typed rows for Feast and training."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

import pandas as pd

from streamrec.errors import UserError

# The stricter of the two parsers this one replaced (the fold's, and the Feast loader's) on every point, so a
# catalog one accepted and the other refused is now refused with file:line: title, genres and duration_minutes
# are required; genres is a list (not 'A|B' text); a number is a number, never coerced to null; an item appears
# once. duration_minutes may be null (unknown: the fold then counts an hour as a full watch); year and popularity
# may be null or absent.


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# field -> (what it must be, the check); null is always allowed
_NUMBERS = {
    "duration_minutes": ("a number > 0", lambda x: _finite(x) and x > 0),
    "year": ("an integer", lambda x: isinstance(x, int) and not isinstance(x, bool)),
    "popularity": ("a number", _finite),
}


def load_items(path: str | os.PathLike) -> dict[str, dict]:
    """items.jsonl as item_id -> record (``item_id``, ``title``, ``genres``, ``duration_minutes``, and
    ``year``, ``popularity`` when given); a bad line is a ``UserError`` naming file:line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as e:
        raise UserError(f"cannot read catalog {path}: {e.strerror}") from None
    items: dict[str, dict] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not JSON ({e.msg})") from None
        problem = _problem(record)
        if problem is not None:
            raise UserError(f"{path}:{n}: not an item record: {problem}")
        if record["item_id"] in items:
            raise UserError(f"{path}:{n}: item {record['item_id']!r} appears twice")
        items[record["item_id"]] = record
    if not items:
        raise UserError(f"catalog {path} has no items")
    return items


def _problem(record) -> str | None:
    """What makes ``record`` no item record, or None."""
    if not isinstance(record, dict):
        return "expected a JSON object"
    missing = [name for name in ("item_id", "title", "genres", "duration_minutes") if name not in record]
    if missing:
        return f"lacks {', '.join(missing)}"
    item_id, title, genres = record["item_id"], record["title"], record["genres"]
    if not isinstance(item_id, str) or not item_id:
        return f"item_id must be a non-empty string, got {item_id!r}"
    if not isinstance(title, str):
        return f"title must be a string, got {title!r}"
    if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
        return f"genres must be a list of strings, got {genres!r}"
    for name, (kind, check) in _NUMBERS.items():
        value = record.get(name)
        if value is not None and not check(value):
            return f"{name} must be {kind} or null, got {value!r}"
    return None


def catalog_frame(items: Mapping[str, Mapping]) -> pd.DataFrame:
    """``load_items``' records as typed rows: ``item_id``, ``title``, ``genres`` (list), ``year`` (Int64),
    ``duration_minutes`` and ``popularity`` (float); null where the record has none."""
    records = list(items.values())

    def column(name: str, dtype: str) -> pd.Series:
        return pd.Series([r.get(name) for r in records], dtype=dtype)

    return pd.DataFrame({
        "item_id": pd.Series([r["item_id"] for r in records], dtype=object),
        "title": pd.Series([r["title"] for r in records], dtype=object),
        "genres": pd.Series([list(r["genres"]) for r in records], dtype=object),
        "year": column("year", "Int64"),
        "duration_minutes": column("duration_minutes", "float64"),
        "popularity": column("popularity", "float64"),
    })
