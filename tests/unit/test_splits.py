"""Loading the event log, id codes, and the leave-last-out and time splits: no leakage, honest negatives, counts."""
import json
import uuid

import numpy as np
import pandas as pd
import pytest

from models.data import IdEncoder, make_split, split_by_time, split_loo
from models.retrieval import load_event_log
from streamrec.catalog import load_items
from streamrec.errors import UserError

DAY = 86_400_000
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _event(user, item, ts, kind="watch", seconds=600.0):
    ev = {"event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{user}/{item}/{ts}")), "event_type": kind, "user_id": user,
          "item_id": item, "ts": ts, "device": "tv", "session_id": "s", "context": {"daypart": "evening"}}
    if kind == "watch":
        ev["watch_seconds"] = seconds
    return ev


def _events(rows) -> pd.DataFrame:
    """(user, item, ts[, kind]) tuples -> the labelled frame (``load_event_log``'s columns the splits read)."""
    frame = pd.DataFrame(
        [(u, i, t, k[0] if k else "watch", 600.0) for u, i, t, *k in rows],
        columns=["user_id", "item_id", "ts_ms", "event_type", "watch_seconds"],
    )
    return frame.assign(label=frame["event_type"].eq("watch"))


def _random_log(n_users=80, n_items=300, seed=0) -> pd.DataFrame:
    """Users with 2..30 watches each (and a few clicks) at random times over a week."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, rng.integers(2, 31), replace=False):
            rows.append((f"u{u}", f"i{i}", int(rng.integers(0, 7 * DAY)), "watch"))
        for i in rng.choice(n_items, 3, replace=False):
            rows.append((f"u{u}", f"i{i}", int(rng.integers(0, 7 * DAY)), "click"))
    return _events(rows)


# ---------------------------------------------------------------- loading


def test_load_reads_both_time_formats_and_labels_watches(tmp_path):
    path = _write_jsonl(tmp_path / "events.jsonl", [
        _event("u1", "a", T0 + 1_000),
        _event("u1", "b", "2023-11-14T22:13:22Z", kind="click"),
        _event("u2", "a", "2023-11-14T23:13:23+01:00"),
        _event("u2", "c", "2023-11-14T22:13:24+00:00"),  # with its zone: one without is refused (the event contract)
    ])
    events = load_event_log(path)
    assert events["ts_ms"].tolist() == [T0 + 1_000, T0 + 2_000, T0 + 3_000, T0 + 4_000]
    assert events["label"].tolist() == [True, False, True, True]


def test_min_watch_fraction_needs_and_uses_the_catalog(tmp_path):
    events = _write_jsonl(
        tmp_path / "events.jsonl", [_event("u", "a", T0 + 1, seconds=300), _event("u", "a", T0 + 2, seconds=299)]
    )
    items = load_items(_write_jsonl(tmp_path / "items.jsonl", [
        {"item_id": "a", "title": "A", "genres": ["Drama"], "year": 1999, "duration_minutes": 10, "popularity": 1.0}
    ]))
    # half of a 10-minute title is 300 s
    assert load_event_log(events, items, min_watch_fraction=0.5)["label"].tolist() == [True, False]
    with pytest.raises(UserError, match="catalog"):
        load_event_log(events, None, min_watch_fraction=0.5)
    with pytest.raises(UserError, match=r"1 watched item\(s\) have no duration_minutes in the catalog"):
        load_event_log(events, {"a": {**items["a"], "duration_minutes": None}}, min_watch_fraction=0.5)


@pytest.mark.parametrize("bad, message", [
    ({k: v for k, v in _event("u", "a", T0).items() if k != "ts"}, "missing_field: ts: required"),
    ({**_event("u", "a", T0), "event_type": "like"}, "unknown_event_type"),
    ({**_event("u", "a", T0), "ts": "yesterday"}, "bad_timestamp"),
    ({**_event("u", "a", T0), "watch_seconds": -1}, "negative_watch_time"),
])
def test_bad_events_name_their_line(tmp_path, bad, message):
    path = _write_jsonl(tmp_path / "events.jsonl", [_event("u", "a", T0), bad])
    with pytest.raises(UserError, match=message) as err:
        load_event_log(path)
    assert "events.jsonl:2" in str(err.value)


def test_empty_or_missing_log_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no events"):
        load_event_log(_write_jsonl(tmp_path / "e.jsonl", []))
    with pytest.raises(UserError, match="cannot read event log .*absent.jsonl: No such file"):
        load_event_log(tmp_path / "absent.jsonl")
    with pytest.raises(UserError, match="no positive"):
        split_loo(_events([("u", "a", 1, "click")]))


def test_id_codes_are_stable_and_round_trip():
    enc = IdEncoder(["b", "c", "a", "b"])
    assert enc.encode(["a", "b", "c"]).tolist() == [0, 1, 2]
    assert IdEncoder(["c", "a", "b"]).encode(["c"]).tolist() == enc.encode(["c"]).tolist()
    assert enc.decode(np.array([2, 0])).tolist() == ["c", "a"]
    with pytest.raises(UserError, match="unknown"):
        enc.encode(["z"])


# ---------------------------------------------------------------- leave-last-out


def test_loo_holds_out_the_last_positive_and_trains_only_on_earlier_ones():
    events = _random_log()
    split = split_loo(events, seed=3)
    train = split.train.assign(user=split.users.decode(split.train["user_idx"]))
    for u, held_out in zip(split.users.decode(split.test_users), split.items.decode(split.test_items)):
        mine = events[(events["user_id"] == u) & events["label"]]
        assert held_out == mine.loc[mine["ts_ms"].idxmax(), "item_id"]
        assert held_out not in set(split.items.decode(train.loc[train["user"] == u, "item_idx"]))
        assert train.loc[train["user"] == u, "ts_ms"].max() <= mine["ts_ms"].max()


def test_loo_negatives_are_99_items_the_user_never_touched():
    events = _random_log()
    split = split_loo(events, seed=3)
    assert split.candidates.shape == (len(split.test_users), 100)
    clicked_in_catalog = 0
    for u, held_out, row in zip(split.users.decode(split.test_users), split.test_items, split.candidates):
        mine = events[events["user_id"] == u]
        assert len(set(row)) == 100 and (row == held_out).sum() == 1
        assert not set(split.items.decode(row[row != held_out])) & set(mine["item_id"])  # clicks included
        clicked_in_catalog += mine.loc[~mine["label"], "item_id"].isin(split.items.ids).sum()
    assert clicked_in_catalog > 0  # the clicks above were candidates to exclude


def test_loo_negatives_are_seeded():
    events = _random_log()
    a, b, c = split_loo(events, seed=5), split_loo(events, seed=5), split_loo(events, seed=6)
    assert np.array_equal(a.candidates, b.candidates)
    assert not np.array_equal(a.candidates, c.candidates)


def test_loo_counts_the_users_it_cannot_test():
    # 6 items; each u* watched 5 of them, which leaves 1 possible negative
    rows = [("one", "a", 1)] + [(f"u{n}", f"i{k}", k) for n in range(3) for k in range(5)]
    with pytest.raises(UserError, match="no test user"):  # an error, not an empty result
        split_loo(_events(rows), n_negatives=2)
    # a 7th item: u1 and u2 now have 2 possible negatives, u0 (who watched it) still 1
    split = split_loo(_events(rows + [("u0", "new", 0)]), n_negatives=2)
    assert split.skipped == {"fewer_than_2_positives": 1, "too_few_negatives": 1}
    assert sorted(split.users.decode(split.test_users)) == ["u1", "u2"]
    # the untested users still train
    assert {"one", "u0"} <= set(split.users.decode(split.train["user_idx"]))


def test_rewatches_are_one_positive_at_the_first_time_and_ties_keep_the_log_order():
    rows = [("u", "b", 5), ("u", "a", 5), ("u", "c", 1), ("u", "c", 9), ("v", "a", 1), ("v", "x", 2)]
    split = split_loo(_events(rows), n_negatives=1, seed=0)
    # c counts at ts 1 (its re-watch at 9 is not a later positive); a and b tie at 5, a is later in the log
    assert split.items.decode(split.test_items[:1]).tolist() == ["a"]
    u_train = split.train[split.train["user_idx"] == 0]
    assert dict(zip(split.items.decode(u_train["item_idx"]), u_train["ts_ms"])) == {"c": 1, "b": 5}


@pytest.mark.parametrize("log_order", [["ml1000", "ml99", "ml5"], ["ml99", "ml5", "ml1000"]])
def test_ties_follow_the_log_not_the_ids_in_every_protocol(log_order):
    # Three watches in one second (as in MovieLens): whatever the ids, the log's last is held out and the
    # log's first two train. An explicit seq (a frame sorted otherwise, e.g. in fold order) is the log order.
    rows = [("u", "ml7", 1)] + [("u", item, 5) for item in log_order] + [("v", "ml1", 1), ("v", "ml2", 2)]
    events = _events(rows).assign(seq=np.arange(len(rows)))
    shuffled = events.sample(frac=1.0, random_state=3)
    for frame in (events, shuffled):
        loo = split_loo(frame, n_negatives=1, seed=0)
        assert loo.items.decode(loo.test_items[:1]).tolist() == [log_order[-1]]
        per_user = split_by_time(frame, per_user=True, train_frac=0.5)
        u = per_user.users.encode(["u"])[0]
        train = per_user.train[per_user.train["user_idx"] == u]
        assert per_user.items.decode(train["item_idx"]).tolist() == ["ml7", log_order[0]]
        test = per_user.test[per_user.test["user_idx"] == u]
        assert per_user.items.decode(test["item_idx"]).tolist() == log_order[1:]


# ---------------------------------------------------------------- time splits


def test_per_user_time_split_keeps_each_users_train_before_their_test():
    split = split_by_time(_random_log(), per_user=True)
    train_last = split.train.groupby("user_idx")["ts_ms"].max()
    test_first = split.test.groupby("user_idx")["ts_ms"].min()
    assert (train_last[test_first.index] <= test_first).all()
    # floor(0.75 n) train positives, at least one a side
    n = split.train.groupby("user_idx").size() + split.test.groupby("user_idx").size()
    expected = np.clip(np.floor(0.75 * n), 1, n - 1)
    assert (split.train.groupby("user_idx").size()[n.index] == expected).all()


def test_global_time_split_cuts_everyone_at_one_time():
    split = make_split(_random_log(), "time_global", train_frac=0.75)
    assert split.train["ts_ms"].max() < split.test["ts_ms"].min()
    total = len(split.train) + len(split.test)
    assert 0.70 < len(split.train) / total < 0.80


def test_global_time_split_skips_users_first_seen_after_the_cut():
    rows = [("old", "a", 1), ("old", "b", 2), ("old", "c", 3), ("old", "d", 10), ("new", "a", 11)]
    split = split_by_time(_events(rows), per_user=False, train_frac=0.75)
    assert split.skipped == {"no_train_history": 1}
    assert set(split.users.decode(split.test["user_idx"])) == {"old"}
    assert "new" not in set(split.users.decode(split.train["user_idx"]))


def test_time_split_errors():
    with pytest.raises(UserError, match="train_frac"):
        split_by_time(_random_log(), per_user=True, train_frac=1.0)
    with pytest.raises(UserError, match="more spread in time"):
        split_by_time(_events([("u", "a", 1), ("u", "b", 1)]), per_user=False)
    with pytest.raises(UserError, match="no test user"):
        split_by_time(_events([("u", "a", 1), ("v", "b", 2)]), per_user=True)
    with pytest.raises(UserError, match="unknown split protocol"):
        make_split(_random_log(), "random")


def test_reads_what_the_generator_writes(tmp_path):
    from streams.generator import generate_world

    paths = generate_world(tmp_path, users=30, items=150, days=3, seed=1)["paths"]
    events = load_event_log(paths["events"], load_items(paths["items"]), min_watch_fraction=0.5)
    assert set(events["event_type"]) == {"click", "watch"}
    assert 0 < events["label"].sum() < (events["event_type"] == "watch").sum()  # some watches fall short of half
    split = split_loo(events, seed=0)
    assert split.candidates.shape[1] == 100 and len(split.test_users) + sum(split.skipped.values()) == split.n_users
