"""The item catalog (items.jsonl, as the generator and the MovieLens converter write it): its one parser, its
typed rows for Feast and training, and its changes as records of the catalog topic (``streamrec catalog add|update``).

A change is ``{"op": "add" | "update", "item": {...}}`` keyed by item id. ``add`` carries a whole record (an item
new or replaced); ``update`` carries ``item_id`` and the fields to change, merged onto the current record, so it
needs an item the catalog already holds. Every reader of the topic applies changes with ``apply_changes``, in topic
order, so they all hold the same catalog."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping

import pandas as pd

from streamrec.errors import UserError
from streamrec.ids import id_problem

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
        problem = item_problem(record)
        if problem is not None:
            raise UserError(f"{path}:{n}: not an item record: {problem}")
        if record["item_id"] in items:
            raise UserError(f"{path}:{n}: item {record['item_id']!r} appears twice")
        items[record["item_id"]] = record
    if not items:
        raise UserError(f"catalog {path} has no items")
    return items


REQUIRED = ("item_id", "title", "genres", "duration_minutes")
OPS = ("add", "update")


def item_problem(record, *, partial: bool = False) -> str | None:
    """What makes ``record`` no item record, or None. ``partial``: an update's fields (only ``item_id`` required)."""
    if not isinstance(record, dict):
        return "expected a JSON object"
    missing = [name for name in (("item_id",) if partial else REQUIRED) if name not in record]
    if missing:
        return f"lacks {', '.join(missing)}"
    item_id = record["item_id"]
    if not isinstance(item_id, str) or not item_id:
        return f"item_id must be a non-empty string, got {item_id!r}"
    if (problem := id_problem(item_id)) is not None:  # an item events cannot name could never be watched
        return f"item_id {problem}"
    if "title" in record and (not isinstance(record["title"], str) or (partial and not record["title"])):
        return f"title must be a string, got {record['title']!r}"
    genres = record.get("genres", [])
    if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
        return f"genres must be a list of strings, got {genres!r}"
    if "description" in record and record["description"] is not None and not isinstance(record["description"], str):
        return f"description must be a string or null, got {record['description']!r}"
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


class RefusedChange(UserError):
    """A catalog change that cannot apply (not a change record, or an update of an unknown item); ``reason`` is
    a short code for the dead-letter header."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def change_record(op: str, record: Mapping) -> dict:
    """A catalog topic record for ``op`` of ``record``; RefusedChange when it is not a valid one."""
    if op not in OPS:
        raise RefusedChange("bad_op", f"op must be one of {OPS}, got {op!r}")
    problem = item_problem(record, partial=op == "update")
    if problem is not None:
        raise RefusedChange("invalid_item", problem)
    return {"op": op, "item": dict(record)}


def parse_change(value: bytes) -> tuple[str, dict]:
    """(op, item fields) of a catalog topic record; RefusedChange for anything else (another producer's)."""
    try:
        change = json.loads(value)
    except (TypeError, ValueError) as e:
        raise RefusedChange("not_json", f"not JSON: {e}") from None
    if not isinstance(change, dict) or set(change) != {"op", "item"}:
        raise RefusedChange("bad_change", 'expected {"op": ..., "item": {...}}')
    checked = change_record(change["op"], change["item"])
    return checked["op"], checked["item"]


def apply_change(current: Mapping | None, op: str, fields: Mapping) -> dict:
    """The item record after the change: ``add`` is the record itself; ``update`` merges onto ``current`` (the
    item's record now, None when the catalog has none)."""
    if op == "add":
        return dict(fields)
    if current is None:
        raise RefusedChange("unknown_item", f"update of item {fields['item_id']!r}, which the catalog does not hold "
                                            "(add it first)")
    record = {**current, **fields}
    problem = item_problem(record)  # e.g. a title set to null
    if problem is not None:
        raise RefusedChange("invalid_item", f"update of item {fields['item_id']!r} leaves no item record: {problem}")
    return record


def apply_changes(items: Mapping[str, Mapping], changes: Iterable[tuple[str, Mapping]]
                  ) -> tuple[dict[str, dict], list[tuple[int, RefusedChange]]]:
    """The records ``changes`` ((op, fields), in topic order over ``items``) leave, item_id -> record; and the
    refused ones, by position."""
    merged: dict[str, dict] = {}
    refused = []
    for n, (op, fields) in enumerate(changes):
        item_id = fields["item_id"]
        try:  # a later change of an item applies to what the earlier ones left
            record = apply_change(merged.get(item_id, items.get(item_id)), op, fields)
        except RefusedChange as e:
            refused.append((n, e))
            continue
        merged[record["item_id"]] = record
    return merged, refused
