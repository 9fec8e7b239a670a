"""The example builder: a positive is labelled at its pick, negatives lie outside what the user had touched by then,
features come from strictly before the label time (through a real, embedded Feast), and the model inputs have
the model's names, shapes and dtypes however they are built."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest

from features.user_state import FEATURE_COLUMNS
from models.data import label_positives
from models.examples import (
    NO_SESSION_SECONDS,
    SHARE_COLUMNS,
    RequestContext,
    entity_rows,
    event_frame,
    input_spec,
    model_inputs,
    pick_positives,
    serving_inputs,
)
from models.train import MAX_PROFILE_CUTS, EventLog, decoded_positives, prepare, profile_cuts
from streamrec.errors import UserError
from streamrec.vocabulary import GENRES

T0 = 1_767_571_200_000  # 2026-01-05T00:00Z, a Monday
MIN = 60_000
CATALOG = [
    {"item_id": f"i{n}", "title": f"Title {n}", "genres": [GENRES[n % len(GENRES)]] + (["Drama"] if n % 3 else []),
     "year": 1990 + n, "duration_minutes": 90 + n, "popularity": 0.5 + n / 10}
    for n in range(1, 13)
]


def event(user: str, item: str, minute: float, kind: str = "click", device: str = "phone") -> dict:
    e = {"event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{user}/{item}/{minute}/{kind}")), "event_type": kind,
         "user_id": user, "item_id": item, "ts": T0 + int(minute * MIN), "device": device, "session_id": f"{user}-s"}
    if kind == "watch":
        e["watch_seconds"] = 1800.0
    return e


# u1: i1 clicked then watched (picked at the click); i2 only clicked; i3 watched without a click (picked at the
# watch); i4 clicked, then i5 clicked, then i4 watched (another event between: picked at the watch).
# u2 watches i1 on a tv, clicked first.
LOG = [
    event("u1", "i1", 0), event("u1", "i1", 0.5, "watch"), event("u1", "i2", 5), event("u1", "i3", 10, "watch"),
    event("u1", "i4", 20), event("u1", "i5", 21), event("u1", "i4", 22, "watch"),
    event("u2", "i1", 3, device="tv"), event("u2", "i1", 3.2, "watch", device="tv"),
    event("u2", "i6", 30, "watch", device="tv"),
]


def log_frame(events=LOG) -> pd.DataFrame:
    return event_frame({**e, "ts_ms": e["ts"]} for e in events)


def picked(events=LOG) -> pd.DataFrame:
    log = log_frame(events)
    interactions = label_positives(log[["user_id", "item_id", "ts_ms", "event_type", "watch_seconds", "seq"]],
                                   None, 0.0)
    return pick_positives(log, decoded_positives(interactions))


def test_a_positive_is_labelled_at_its_pick():
    got = picked()[["user_id", "item_id", "ts_ms", "device"]]
    assert got.to_dict("records") == [
        {"user_id": "u1", "item_id": "i1", "ts_ms": T0, "device": "phone"},                # at the click
        {"user_id": "u1", "item_id": "i3", "ts_ms": T0 + 10 * MIN, "device": "phone"},     # no click: at the watch
        {"user_id": "u1", "item_id": "i4", "ts_ms": T0 + 22 * MIN, "device": "phone"},     # i5 between: at the watch
        {"user_id": "u2", "item_id": "i1", "ts_ms": T0 + 3 * MIN, "device": "tv"},
        {"user_id": "u2", "item_id": "i6", "ts_ms": T0 + 30 * MIN, "device": "tv"},
    ]


def test_negatives_avoid_what_the_user_had_touched_by_then():
    positives, log = picked(), log_frame()
    items = [c["item_id"] for c in CATALOG]
    rows = entity_rows(positives, log, items, negatives=3, seed=1)

    assert len(rows) == 4 * len(positives)
    assert rows["label"].tolist() == [1, 0, 0, 0] * len(positives)
    for _, group in rows.groupby("group"):
        positive, negatives = group.iloc[0], group.iloc[1:]
        at = positive["event_timestamp"].value // 1_000_000
        mine = log[log["user_id"] == positive["user_id"]]
        assert not set(negatives["item_id"]) & set(mine.loc[mine["ts_ms"] <= at, "item_id"])  # clicks included
        assert positive["item_id"] not in set(negatives["item_id"]) and negatives["item_id"].nunique() == 3
        assert (group["event_timestamp"] == positive["event_timestamp"]).all()
        assert (group["device"] == positive["device"]).all() and (group["user_id"] == positive["user_id"]).all()
    assert rows["event_timestamp"].iloc[0] == pd.Timestamp(T0, unit="ms", tz="UTC")
    pd.testing.assert_frame_equal(rows, entity_rows(positives, log, items, negatives=3, seed=1))
    assert not rows.equals(entity_rows(positives, log, items, negatives=3, seed=2))


def test_items_touched_later_can_be_negatives_as_at_training_time():
    # u1's first positive (i1 at T0) comes before u1 touched i2..i5: a model trained then could not know them.
    positives, log = picked(), log_frame()
    items = [c["item_id"] for c in CATALOG]
    first = [set(entity_rows(positives, log, items, negatives=3, seed=seed).iloc[1:4]["item_id"])
             for seed in range(40)]
    assert set().union(*first) & {"i2", "i3", "i4", "i5"}


def test_later_events_change_no_earlier_negative():
    # The leak check: what happens after a cut (the user's own test items, other users' events, new users)
    # must not change one training row before it.
    cut = T0 + 25 * MIN
    later = [event("u1", "i7", 40, "watch"), event("u1", "i8", 41), event("u2", "i2", 50, "watch"),
             event("u0", "i9", 60, "watch"), event("u2", "i3", 26)]
    items = [c["item_id"] for c in CATALOG]
    before = entity_rows(picked(), log_frame(), items, negatives=3, seed=4)
    after = entity_rows(picked(LOG + later), log_frame(LOG + later), items, negatives=3, seed=4)
    def early(rows: pd.DataFrame) -> pd.DataFrame:
        return rows[rows["event_timestamp"] < pd.Timestamp(cut, unit="ms", tz="UTC")]
    kept = early(after).drop(columns="group").reset_index(drop=True)
    assert len(kept) == len(early(before)) > 0
    pd.testing.assert_frame_equal(kept, early(before).drop(columns="group").reset_index(drop=True))


def test_too_small_a_catalog_for_the_negatives_is_an_error():
    # u1's pick of i4 comes after touching i1..i5: of i1..i7, only i6 and i7 are left.
    with pytest.raises(UserError, match="too few to draw 3 negatives"):
        entity_rows(picked(), log_frame(), ["i1", "i2", "i3", "i4", "i5", "i6", "i7"], negatives=3, seed=0)


def test_training_features_come_from_strictly_before_the_label(feast_settings, tmp_path):
    events_path, items_path = tmp_path / "events.jsonl", tmp_path / "items.jsonl"
    events_path.write_text("".join(json.dumps(e) + "\n" for e in LOG))
    items_path.write_text("".join(json.dumps(c) + "\n" for c in CATALOG))

    examples = prepare(feast_settings, EventLog(events_path, items_path, "test"), negatives=2, seed=0).examples.frame()

    log = log_frame()
    positives = examples[examples["label"] == 1].set_index(["user_id", "item_id"])
    for (user, _item), row in positives.iterrows():
        label_ms = row["event_timestamp"].value // 1_000_000
        before = log[(log["user_id"] == user) & (log["ts_ms"] < label_ms)]
        if before.empty:  # the user's first pick: no session row yet
            assert pd.isna(row["events_total"]) and pd.isna(row["last_event_ts_ms"])
        else:
            assert row["events_total"] == len(before)
            assert row["last_event_ts_ms"] == before["ts_ms"].max()
    # i1 was picked at its click: neither the click nor the watch is in the features.
    assert pd.isna(positives.loc[("u1", "i1"), "events_total"])
    # u1's i4 watch comes after the i4 and i5 clicks: both are seen, the watch itself is not.
    assert positives.loc[("u1", "i4"), "events_total"] == 6
    assert list(positives.loc[("u1", "i4"), "last_items"][:2]) == ["i5", "i4"]
    # Negatives share their positive's user-side features; item features are their own.
    for _, group in examples.groupby("group"):
        assert group["events_total"].nunique(dropna=False) == 1
        assert group.set_index("item_id")["year"].to_dict() == {i: 1990 + int(i[1:]) for i in group["item_id"]}
    # Profiles are cut at midnight and at the last event; every label here precedes both.
    assert examples["profile_events"].isna().all()


def test_profiles_are_cut_at_midnights_and_at_the_last_event():
    first, last = pd.Timestamp("2026-01-05 00:14", tz="UTC"), pd.Timestamp("2026-01-08 09:00", tz="UTC")
    assert profile_cuts(first, last) == [pd.Timestamp(f"2026-01-0{d}", tz="UTC") for d in (6, 7, 8)] + [last]
    months = profile_cuts(first, first + pd.Timedelta(days=280))
    assert len(months) <= MAX_PROFILE_CUTS + 1 and len(set(pd.Series(months[:-1]).diff().dropna())) == 1


SESSION_ROW = {
    "user_id": "u1", "aff_comedy": 0.6, "aff_drama": 0.2, "events_total": 7, "session_events": 3,
    "session_length_s": 240.0, "last_device": "tv", "daypart": "evening", "is_weekend": 0,
    "last_items": ["i2", "i3"], "last_event_ts_ms": T0 + 5 * MIN, "prev_gap_s": 30.0,
}
PROFILE_ROW = {"user_id": "u1", "profile_events": 12, "profile_top_genre": "comedy",
               "share_comedy": 0.75, "share_drama": 0.25}


def test_serving_inputs_have_the_models_names_shapes_and_dtypes():
    context = RequestContext("u1", T0 + 6 * MIN, "phone")  # Monday 00:06 UTC: late night, weekday
    for live in (True, False):
        inputs = serving_inputs(SESSION_ROW, CATALOG[:4], PROFILE_ROW, context, live=live)
        spec = input_spec(live)
        assert set(inputs) == set(spec)
        for name, (dtype, width) in spec.items():
            array = inputs[name]
            assert array.shape[0] == 4 and array.ndim == 2, name
            assert width is None or array.shape[1] == width, name
            assert array.dtype == {"string": object, "float32": np.float32, "int64": np.int64}[dtype], name
    inputs = serving_inputs(SESSION_ROW, CATALOG[:4], PROFILE_ROW, context)
    assert inputs["item_id"].ravel().tolist() == ["i1", "i2", "i3", "i4"]  # candidates keep their order
    assert inputs["user_id"].ravel().tolist() == ["u1"] * 4
    assert inputs["item_genres"][:3].tolist() == [["Adventure", "Drama"], ["Animation", "Drama"], ["Children's", ""]]
    assert inputs["last_items"].tolist() == [["i2", "i3"]] * 4
    assert inputs["time_since_last_event_s"].ravel().tolist() == [60.0] * 4
    assert inputs["daypart"].ravel().tolist() == ["late_night"] * 4
    assert inputs["device"].ravel().tolist() == ["phone"] * 4
    assert inputs["is_weekend"].ravel().tolist() == [0] * 4
    assert inputs["affinity"][0, GENRES.index("Comedy")] == pytest.approx(0.6)
    assert inputs["profile_shares"][0, GENRES.index("Comedy")] == pytest.approx(0.75)


def test_a_user_never_seen_gets_neutral_inputs():
    inputs = serving_inputs(None, [{"item_id": "new", "genres": None}], None, RequestContext("nobody", T0, "tv"))
    assert inputs["affinity"].sum() == 0 and inputs["events_total"][0, 0] == 0
    assert inputs["time_since_last_event_s"][0, 0] == NO_SESSION_SECONDS
    assert inputs["last_items"].tolist() == [[""]] and inputs["item_genres"].tolist() == [[""]]
    assert (inputs["year"][0, 0], inputs["popularity"][0, 0]) == (2000.0, 1.0)


# (session, profile, request ms, device, timezone): rows with every kind of missing value, skew, weekend, a zone.
SAME_INPUT_CASES = {
    "full": (SESSION_ROW, PROFILE_ROW, T0 + 6 * MIN, "phone", "UTC"),
    "never seen": (None, None, T0, "tv", "UTC"),
    "missing values": ({**SESSION_ROW, "aff_comedy": None, "session_events": float("nan"), "last_items": None,
                        "prev_gap_s": None}, {"user_id": "u1", "profile_events": None}, T0 + MIN, "", "UTC"),
    "session after the request": (SESSION_ROW, None, T0 + MIN, "web", "UTC"),
    "no last event": ({**SESSION_ROW, "last_event_ts_ms": None}, PROFILE_ROW, T0 + 9 * MIN, "phone", "UTC"),
    "weekend in another zone": (SESSION_ROW, PROFILE_ROW, T0 - 2 * 60 * MIN, "tv", "America/New_York"),
}


@pytest.mark.parametrize("live", [True, False])
@pytest.mark.parametrize("case", SAME_INPUT_CASES)
def test_training_rows_and_serving_rows_give_the_same_inputs(case, live):
    """A training-set row (Feast's columns, one user and item per row) and serving_inputs agree exactly,
    whatever is missing: serving builds the request's inputs without a frame."""
    session, profile, ts_ms, device, tz = SAME_INPUT_CASES[case]
    context = RequestContext("u1", ts_ms, device, tz)
    served = serving_inputs(session, CATALOG[:3], profile, context, live=live)
    blank = dict.fromkeys([*FEATURE_COLUMNS, *SHARE_COLUMNS, "profile_events"])  # what Feast's join returns
    rows = pd.DataFrame([{**blank, **(session or {}), **(profile or {}), **item, "user_id": "u1", "device": device,
                          "event_timestamp": pd.Timestamp(ts_ms, unit="ms", tz="UTC"), "label": 0}
                         for item in CATALOG[:3]])
    trained = model_inputs(rows, tz, live=live)
    assert set(trained) == set(served)
    for name in served:
        assert trained[name].dtype == served[name].dtype, name
        np.testing.assert_array_equal(trained[name], served[name], err_msg=name)
