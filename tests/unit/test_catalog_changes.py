"""Catalog changes (``streamrec.catalog``): what the catalog topic accepts, and how every reader applies it."""
from __future__ import annotations

import json

import pytest

from streamrec.catalog import RefusedChange, apply_changes, change_record, parse_change

ITEM = {"item_id": "new-1", "title": "Night Train", "genres": ["Thriller"], "duration_minutes": 95, "year": 2026}


def test_an_add_needs_a_whole_record_and_an_update_only_the_id():
    assert change_record("add", ITEM) == {"op": "add", "item": ITEM}
    assert change_record("update", {"item_id": "new-1", "title": "Night Train (cut)"})["op"] == "update"
    with pytest.raises(RefusedChange, match="lacks title") as e:
        change_record("add", {"item_id": "x", "genres": [], "duration_minutes": None})
    assert e.value.reason == "invalid_item"


@pytest.mark.parametrize(("op", "record", "reason", "words"), [
    ("remove", ITEM, "bad_op", "op must be one of"),
    ("add", {**ITEM, "item_id": "has space"}, "invalid_item", "letters, digits"),
    ("add", {**ITEM, "genres": "Thriller|Drama"}, "invalid_item", "list of strings"),
    ("update", {"item_id": "new-1", "duration_minutes": -3}, "invalid_item", "number > 0"),
    ("update", {"item_id": "new-1", "title": ""}, "invalid_item", "title must be"),
    ("update", {"item_id": "new-1", "description": 7}, "invalid_item", "description"),
])
def test_bad_changes_are_refused_with_a_reason(op, record, reason, words):
    with pytest.raises(RefusedChange, match=words) as e:
        change_record(op, record)
    assert e.value.reason == reason


@pytest.mark.parametrize(("value", "reason"), [
    (b"{nope", "not_json"), (b"[1]", "bad_change"), (json.dumps({"op": "add"}).encode(), "bad_change"),
    (json.dumps({"op": "add", "item": {"item_id": "x"}}).encode(), "invalid_item"),
])
def test_a_topic_record_that_is_no_change_is_refused(value, reason):
    with pytest.raises(RefusedChange) as e:
        parse_change(value)
    assert e.value.reason == reason


def test_changes_apply_in_order_updates_merge_and_unknown_ones_are_refused():
    current = {"old": {**ITEM, "item_id": "old", "title": "Old"}}
    changes = [
        ("update", {"item_id": "new-1", "title": "Too early"}),  # before its add: unknown then
        ("add", ITEM),
        ("update", {"item_id": "new-1", "description": "A night on the rails."}),
        ("update", {"item_id": "old", "genres": ["Drama"]}),
        ("update", {"item_id": "old", "title": None}),  # would leave no record
    ]
    merged, refused = apply_changes(current, changes)
    assert merged["new-1"] == {**ITEM, "description": "A night on the rails."}
    assert merged["old"]["genres"] == ["Drama"] and merged["old"]["title"] == "Old"
    assert [(n, e.reason) for n, e in refused] == [(0, "unknown_item"), (4, "invalid_item")]
    assert current["old"]["genres"] == ["Thriller"]  # the input is not changed
