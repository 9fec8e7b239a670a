"""ExampleSet: examples as request rows x item rows; selecting positives keeps their negatives, a new item table
replaces the items' values, and ``frame`` is one row per example with both sides' columns."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.example_set import ExampleSet


def _examples() -> ExampleSet:
    requests = pd.DataFrame({"group": [10, 11], "user_id": ["u1", "u2"], "item_id": ["a", "c"],
                             "event_timestamp": pd.to_datetime([1, 2], unit="s", utc=True), "events_total": [3, 4]})
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "genres": [["Drama"], ["Comedy"], []], "year": [1990, 1991, 1992],
                          "duration_minutes": [90.0, 95.0, 100.0], "popularity": [0.5, 0.2, 0.1]})
    return ExampleSet(requests, items, request_row=np.array([0, 0, 1, 1]), item_row=np.array([0, 1, 2, 1]),
                      label=np.array([1, 0, 1, 0], np.float32))


def test_frame_is_one_row_per_example_with_its_request_and_item():
    frame = _examples().frame()
    assert frame[["group", "user_id", "item_id", "year", "events_total", "label"]].values.tolist() == [
        [10, "u1", "a", 1990, 3, 1.0], [10, "u1", "b", 1991, 3, 0.0],
        [11, "u2", "c", 1992, 4, 1.0], [11, "u2", "b", 1991, 4, 0.0]]
    assert _examples().positives == 2 and len(_examples()) == 4


def test_of_groups_keeps_each_positive_with_its_negatives():
    chosen = _examples().of_groups([11])
    assert chosen.frame()[["user_id", "item_id", "label"]].values.tolist() == [["u2", "c", 1.0], ["u2", "b", 0.0]]
    assert len(_examples().of_groups([])) == 0


def test_with_items_replaces_the_item_values_row_for_row():
    examples = _examples()
    changed = examples.with_items(examples.items.assign(popularity=[9.0, 8.0, 7.0]))
    assert changed.frame()["popularity"].tolist() == [9.0, 8.0, 7.0, 8.0]
    with pytest.raises(ValueError, match="3 rows, got 2"):
        examples.with_items(examples.items.iloc[:2])
