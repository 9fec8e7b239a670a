"""Nothing of the test period reaches Wide & Deep's training in ``streamrec evaluate``: two logs that agree up to
each user's held-out pick and differ after it give the same training rows (features through a real, embedded
Feast; negatives; popularity), and the popularity feature counts the split's train positives only."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from models.data import make_split
from models.evaluate import WideDeepRanker, context_rows, train_popularity
from models.train import EventLog, prepare
from models.wide_deep import WideDeepConfig
from streams.movielens import relative_popularity
from tests.unit.test_examples import CATALOG, LOG, event


def _training_rows(settings, tmp_path, events) -> pd.DataFrame:
    tmp_path.mkdir()
    events_path, items_path = tmp_path / "events.jsonl", tmp_path / "items.jsonl"
    events_path.write_text("".join(json.dumps(e) + "\n" for e in events))
    items_path.write_text("".join(json.dumps(c) + "\n" for c in CATALOG))
    prepared = prepare(settings, EventLog(events_path, items_path, "test"), negatives=3, seed=0)
    split = make_split(prepared.interactions, "loo", n_negatives=1, seed=0)  # the split knows few items
    ranker = WideDeepRanker(prepared, split, context_rows(prepared, split), live=True, config=WideDeepConfig(),
                            seed=0, timezone="UTC", progress=False)
    rows = ranker.training_examples(split.train).frame().drop(columns="group")
    return rows.sort_values(["user_id", "event_timestamp", "label", "item_id"]).reset_index(drop=True)


def test_the_test_period_changes_no_training_row(feast_settings, tmp_path):
    # Each user's last watch is the held-out pick: change those to other items, and add clicks after them (a
    # watch would be a later positive and so move the held-out pick); the training rows must not move.
    later = [e for e in LOG if not (e["event_type"] == "watch" and e["item_id"] in {"i4", "i6"})]
    later += [event("u1", "i9", 22, "watch"), event("u2", "i10", 30, "watch"), event("u1", "i7", 50),
              event("u2", "i8", 60), event("u2", "i11", 61), event("u2", "i2", 62)]
    first = _training_rows(feast_settings, tmp_path / "a", LOG)
    second = _training_rows(feast_settings, tmp_path / "b", later)
    assert len(first) == 4 * 3  # u1: i1, i3; u2: i1 (3 negatives each)
    pd.testing.assert_frame_equal(first, second)


def test_popularity_counts_the_train_positives_only():
    events = pd.DataFrame({
        "user_id": ["u", "u", "v", "v", "w", "w"], "item_id": ["a", "b", "a", "c", "b", "c"],
        "ts_ms": [1, 2, 1, 9, 1, 9], "event_type": "watch", "watch_seconds": 60.0, "label": True,
    })
    split = make_split(events, "time_user", train_frac=0.5)  # trains u:a, v:a, w:b; tests u:b, v:c, w:c
    popularity = train_popularity(split, ["a", "b", "c", "d"])
    assert popularity.to_dict() == dict(zip("abcd", relative_popularity(np.array([2, 1, 0, 0]))))
    assert popularity["c"] == popularity["d"] < popularity["b"] < popularity["a"]
