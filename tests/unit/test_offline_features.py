import json
from collections import Counter
from datetime import UTC, datetime

import pandas as pd
import pytest

from features.offline import compute_features, feature_history, read_event_log
from features.user_state import FEATURE_COLUMNS
from streamrec.catalog import load_items
from streamrec.config import FeatureConfig
from streamrec.errors import UserError

MIN = 60_000
T0 = 1_704_571_200_000  # 2024-01-06T20:00:00Z, a Saturday
CFG = FeatureConfig()  # half-life 30 min, session gap 30 min, click weight 0.25, 10 last items, UTC

ITEMS = [
    {"item_id": "m1", "title": "One", "genres": ["Action", "Sci-Fi"], "year": 1999, "duration_minutes": 120,
     "popularity": 0.5},
    {"item_id": "m2", "title": "Two", "genres": ["Comedy"], "year": 2001, "duration_minutes": 90, "popularity": 0.2},
    {"item_id": "m3", "title": "Three", "genres": ["Drama", "Romance", "War"], "year": 1990,
     "duration_minutes": None, "popularity": 0.1},
]


def event(n, user, kind, item, ts, device="tv", session="s1", watch=None):
    e = {"event_id": f"00000000-0000-4000-8000-{n:012d}", "event_type": kind, "user_id": user, "item_id": item,
         "ts": ts, "device": device, "session_id": session}
    if watch is not None:
        e["watch_seconds"] = watch
    return e


# In file order, not time order: the fold sorts.
EVENTS = [
    event(3, "u1", "watch", "m2", T0 + 90 * MIN, session="s2", watch=5400),
    event(1, "u1", "click", "m1", "2024-01-06T20:00:00Z", device="phone"),
    event(6, "u2", "watch", "m3", "2024-01-08T09:15:00+00:00", device="desktop", session="x", watch=1800.0),
    event(4, "u1", "click", "m1", T0 + 120 * MIN, session="s2"),
    event(2, "u1", "watch", "m1", "2024-01-06T20:30:00.000Z", watch=3600),
    event(5, "u2", "click", "m404", 1_704_705_240_000, device="desktop", session="x"),  # 09:14Z, not in catalog
]


@pytest.fixture
def log(tmp_path):
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    return tmp_path


def features(log, fn=compute_features):
    return fn(read_event_log(log / "events.jsonl"), load_items(log / "items.jsonl"), CFG)


def test_user_worked_out_by_hand(log):
    # u1, half-life 30 min, latest event T0+120min = 22:00Z Saturday:
    #   T0      click m1 [Action, Sci-Fi]: 0.25 click weight -> 0.125 each; clicks 1
    #   T0+30   watch m1 3600 s of 120 min = 0.5 -> 0.25 each; watch time 3600; watches 1
    #   T0+90   watch m2 [Comedy] 5400 s of 90 min = 1.0 -> Comedy 1; watch time 5400; watches 1
    #   T0+120  click m1 -> 0.125 each; clicks 1
    # decay to T0+120 (4, 3, 1, 0 half-lives back):
    #   Action = Sci-Fi = 0.125/16 + 0.25/8 + 0.125 = 0.0078125 + 0.03125 + 0.125 = 0.1640625
    #   Comedy = 1/2 = 0.5
    #   watch time = 3600/8 + 5400/2 = 450 + 2700 = 3150
    #   clicks = 1/16 + 1 = 1.0625;  watches = 1/8 + 1/2 = 0.625
    # gaps 30, 60, 30 min: the 60 min gap starts a new gap-based session (T0+90, T0+120): 2 events, 1800 s
    row = features(log).set_index("user_id").loc["u1"]
    assert row["aff_action"] == row["aff_sci_fi"] == pytest.approx(0.1640625, rel=1e-15)
    assert row["aff_comedy"] == pytest.approx(0.5, rel=1e-15)
    assert row["aff_drama"] == row["aff_war"] == 0.0
    assert row["watch_time_decayed"] == pytest.approx(3150.0, rel=1e-15)
    assert row["clicks_decayed"] == pytest.approx(1.0625, rel=1e-15)
    assert row["watches_decayed"] == pytest.approx(0.625, rel=1e-15)
    assert row["events_total"] == 4
    assert (row["session_id"], row["session_events"], row["session_length_s"]) == ("s2", 2, 1800.0)
    assert (row["last_device"], row["local_hour"], row["daypart"], row["is_weekend"]) == ("tv", 22, "late_night", 1)
    assert row["last_items"] == ["m1", "m2"]
    assert (row["last_event_ts_ms"], row["prev_gap_s"]) == (T0 + 120 * MIN, 1800.0)
    assert row["event_timestamp"] == pd.Timestamp(datetime(2024, 1, 6, 22, 0, tzinfo=UTC))


def test_unknown_duration_and_unknown_item(log):
    # u2: click m404 (not in the catalog: counts, no affinity) at 09:14, then watch m3 at 09:15:
    # 1800 s with unknown duration = 0.5 over Drama, Romance, War = 1/6 each, no decay at the latest event.
    # The click is one minute (1/30 half-life) old: 2^(-1/30).
    row = features(log).set_index("user_id").loc["u2"]
    assert row["aff_drama"] == row["aff_romance"] == row["aff_war"] == pytest.approx(1 / 6, rel=1e-15)
    assert row["aff_action"] == 0.0
    assert row["clicks_decayed"] == pytest.approx(2 ** (-1 / 30), rel=1e-15)
    assert (row["watch_time_decayed"], row["watches_decayed"], row["events_total"]) == (1800.0, 1.0, 2)
    assert (row["session_events"], row["session_length_s"], row["prev_gap_s"]) == (2, 60.0, 60.0)
    assert row["last_items"] == ["m3", "m404"]
    assert (row["local_hour"], row["daypart"], row["is_weekend"]) == (9, "morning", 0)


def test_one_row_per_user_with_the_feature_columns(log):
    frame = features(log)
    assert list(frame.columns) == list(FEATURE_COLUMNS)
    assert frame["user_id"].tolist() == ["u1", "u2"]
    assert str(frame["event_timestamp"].dtype) == "datetime64[ns, UTC]"


def test_dataframe_input_gives_the_same_features(log):
    # a frame has NaN where a click has no watch_seconds
    frame = pd.DataFrame(list(read_event_log(log / "events.jsonl")))
    assert frame["watch_seconds"].isna().sum() == 3
    pd.testing.assert_frame_equal(compute_features(frame, load_items(log / "items.jsonl"), CFG), features(log))


def test_history_is_one_row_per_event_time_and_monotone_in_time(log):
    history = features(log, feature_history)
    assert len(history) == len(EVENTS)
    for _, rows in history.groupby("user_id", sort=False):
        assert rows["event_timestamp"].is_monotonic_increasing
        assert rows["events_total"].tolist() == list(range(1, len(rows) + 1))
    u1 = history[history["user_id"] == "u1"]
    assert u1["last_event_ts_ms"].tolist() == [T0, T0 + 30 * MIN, T0 + 90 * MIN, T0 + 120 * MIN]
    # after the second event only the first two count: clicks 2^-1 = 0.5, watches 1
    assert (u1.iloc[1]["clicks_decayed"], u1.iloc[1]["watches_decayed"]) == (0.5, 1.0)


def test_events_sharing_a_time_leave_one_row_the_state_after_all_of_them(tmp_path):
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    tied = EVENTS + [event(7, "u2", "watch", "m1", 1_704_705_240_000, device="desktop", session="x", watch=60),
                     event(8, "u2", "click", "m2", 1_704_705_240_000, device="desktop", session="x")]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in tied))
    history = features(tmp_path, feature_history)
    u2 = history[history["user_id"] == "u2"]
    assert u2["events_total"].tolist() == [3, 4]  # 09:14 (three events), 09:15
    assert u2["event_timestamp"].is_unique and len(history) == len(tied) - 2
    at_0914 = u2.iloc[0]
    assert list(at_0914["last_items"][:3]) == ["m404", "m2", "m1"]  # all three; equal times by item_id


def test_history_ends_where_compute_features_does(log):
    last = features(log, feature_history).groupby("user_id").tail(1).reset_index(drop=True)
    pd.testing.assert_frame_equal(last, features(log))


def test_no_events_no_rows():
    frame = compute_features([], {}, CFG)
    assert frame.empty and list(frame.columns) == list(FEATURE_COLUMNS)


def test_invalid_event_line_names_file_and_line(log):
    path = log / "events.jsonl"
    lines = path.read_text().splitlines()
    lines.insert(2, json.dumps({**EVENTS[0], "ts": "yesterday"}))
    lines.insert(4, "{not json")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"events\.jsonl:3: invalid event \(bad_timestamp"):
        list(read_event_log(path))
    skipped = Counter()
    assert len(list(read_event_log(path, skipped=skipped))) == len(EVENTS)
    assert skipped == Counter({"bad_timestamp": 1, "not_json": 1})


def test_timestamps_are_normalized_to_epoch_ms(log):
    ts = {e["event_id"][-1]: e["ts_ms"] for e in read_event_log(log / "events.jsonl")}
    assert (ts["1"], ts["2"], ts["6"]) == (T0, T0 + 30 * MIN, 1_704_705_300_000)
    assert all("ts" not in e for e in read_event_log(log / "events.jsonl"))


def test_a_time_without_a_utc_offset_is_refused(tmp_path):
    # the one reader of logs applies the event contract: a naive time is ambiguous, not taken as UTC
    path = tmp_path / "events.jsonl"
    naive = event(7, "u1", "click", "m1", "2024-01-06T20:00:00")
    path.write_text(json.dumps(EVENTS[0]) + "\n" + json.dumps(naive) + "\n")
    refused = r"events\.jsonl:2: invalid event \(bad_timestamp: ts: '2024-01-06T20:00:00' has no UTC offset"
    with pytest.raises(UserError, match=refused):
        list(read_event_log(path))
    skipped = Counter()
    assert [e["event_id"] for e in read_event_log(path, skipped=skipped)] == [EVENTS[0]["event_id"]]
    assert skipped == Counter({"bad_timestamp": 1})


def test_a_missing_log_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"cannot read event log .*absent\.jsonl: No such file"):
        list(read_event_log(tmp_path / "absent.jsonl"))


def test_a_log_may_lie_in_the_future(tmp_path):
    # the ingest refuses events far ahead of its clock; a (generated) log is read whatever today is
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(event(1, "u1", "click", "m1", "2100-01-01T00:00:00Z")) + "\n")
    assert [e["ts_ms"] for e in read_event_log(path)] == [4_102_444_800_000]
