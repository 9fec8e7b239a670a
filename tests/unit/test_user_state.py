from datetime import UTC, datetime

import numpy as np
import pytest

from features.user_state import (
    DECAYED_COLUMNS,
    FEATURE_COLUMNS,
    UserState,
    decay_features_to,
    event_delta,
    watch_fraction,
)
from streamrec.config import FeatureConfig
from streamrec.vocabulary import GENRE_SLUGS, GENRES

MIN = 60_000
T0 = 1_704_571_200_000  # 2024-01-06T20:00:00Z, a Saturday
CFG = FeatureConfig(half_life_minutes=30, session_gap_minutes=30, last_n_items=3, click_weight=0.25)


def ev(n, ts_ms, kind="click", item="m1", genres=("Action",), watch=None, duration=None, device="tv", session="s1"):
    return {
        "event_id": f"e{n:04d}", "event_type": kind, "user_id": "u1", "item_id": item, "ts_ms": ts_ms,
        "device": device, "session_id": session, "watch_seconds": watch, "genres": list(genres),
        "duration_minutes": duration,
    }


def folded(events, cfg=CFG):
    state = UserState()
    state.apply(events, cfg)
    return state


def random_log(rng, n):
    """Events with repeated items, equal timestamps and session gaps, sorted in fold order."""
    steps = rng.choice([0, 1_000, 5 * MIN, 45 * MIN], size=n, p=[0.1, 0.4, 0.35, 0.15])
    events = []
    for i, ts in enumerate(T0 + np.cumsum(steps)):
        genres = list(rng.choice(GENRES, rng.integers(0, 4), replace=False))
        if rng.random() < 0.5:
            events.append(ev(i, int(ts), "click", f"m{rng.integers(8)}", genres, device="phone", session=f"s{i // 7}"))
        else:
            duration = None if rng.random() < 0.2 else float(rng.integers(60, 180))
            events.append(ev(i, int(ts), "watch", f"m{rng.integers(8)}", genres, float(rng.random() * 9000), duration))
    return events


# ---- what one event adds ----

def test_watch_fraction():
    assert watch_fraction(3000, 100) == 0.5  # 3000 s of a 6000 s film
    assert watch_fraction(9000, 100) == 1.0  # clipped
    assert watch_fraction(1800, None) == 0.5  # unknown duration: an hour counts as a full watch
    assert watch_fraction(7200, None) == 1.0
    assert watch_fraction(1800, float("nan")) == 0.5  # pandas' missing duration
    assert watch_fraction(1800, 0) == 0.5


def test_click_splits_the_click_weight_over_known_genres():
    # 0.25 over Action and Comedy; "unknown" is not one of the 18 genres and carries nothing
    delta = event_delta(ev(1, T0, genres=("Action", "Comedy", "unknown")), 0.25)
    row = dict(zip(DECAYED_COLUMNS, delta.tolist()))
    assert row["aff_action"] == row["aff_comedy"] == 0.125
    assert row["clicks_decayed"] == 1.0
    assert sum(delta) == 0.25 + 1.0


def test_watch_adds_fraction_split_time_and_count():
    # 5400 s of a 120 min (7200 s) film: 0.75 over Drama and War = 0.375 each
    delta = event_delta(ev(1, T0, "watch", genres=("Drama", "War"), watch=5400.0, duration=120.0), 0.25)
    row = dict(zip(DECAYED_COLUMNS, delta.tolist()))
    assert row["aff_drama"] == row["aff_war"] == 0.375
    assert (row["watch_time_decayed"], row["watches_decayed"], row["clicks_decayed"]) == (5400.0, 1.0, 0.0)


def test_genres_as_numpy_array_and_none():
    a = event_delta(ev(1, T0, genres=np.array(["Action", "Comedy"])), 0.25)
    b = event_delta(ev(1, T0, genres=["Action", "Comedy"]), 0.25)
    assert a.tolist() == b.tolist()
    none = ev(1, T0)
    none["genres"] = None
    assert event_delta(none, 0.25)[: len(GENRES)].sum() == 0.0


def test_malformed_events_are_refused():
    with pytest.raises(ValueError, match="watch_seconds"):
        folded([ev(1, T0, "watch", watch=None)])
    with pytest.raises(ValueError, match="watch_seconds"):
        folded([ev(1, T0, "watch", watch=float("nan"))])
    with pytest.raises(ValueError, match="event_type"):
        folded([ev(1, T0, "rate")])


# ---- the fold ----

def test_hand_computed_fold():
    # half-life 30 min; latest event at T0+60min
    #   T0      click m1 [Action, Comedy]   -> Action, Comedy += 0.125; clicks += 1
    #   T0+30   watch m2 [Comedy] 3000 s of 100 min -> Comedy += 0.5; watch time += 3000; watches += 1
    #   T0+60   click m1 [Action, Comedy]   -> Action, Comedy += 0.125; clicks += 1
    # at T0+60: Action = 0.125*2^-2 + 0.125 = 0.15625
    #           Comedy = 0.125*2^-2 + 0.5*2^-1 + 0.125 = 0.40625
    #           watch time = 3000*2^-1 = 1500, watches = 0.5, clicks = 2^-2 + 1 = 1.25
    state = folded([
        ev(1, T0, item="m1", genres=("Action", "Comedy"), session="s1", device="phone"),
        ev(2, T0 + 30 * MIN, "watch", "m2", ("Comedy",), 3000.0, 100.0, session="s1"),
        ev(3, T0 + 60 * MIN, item="m1", genres=("Action", "Comedy"), session="s2", device="tv"),
    ])
    row = state.feature_row("u1")
    assert row["aff_action"] == pytest.approx(0.15625, rel=1e-15)
    assert row["aff_comedy"] == pytest.approx(0.40625, rel=1e-15)
    assert row["watch_time_decayed"] == pytest.approx(1500.0, rel=1e-15)
    assert row["watches_decayed"] == pytest.approx(0.5, rel=1e-15)
    assert row["clicks_decayed"] == pytest.approx(1.25, rel=1e-15)
    assert all(row[f"aff_{s}"] == 0.0 for s in GENRE_SLUGS if s not in ("action", "comedy"))
    # gaps 30 min and 30 min: exactly the session gap, so one gap-based session
    assert (row["session_events"], row["session_length_s"], row["session_id"]) == (3, 3600.0, "s2")
    assert row["last_items"] == ["m1", "m2"]  # m1 re-seen moves to the front, once
    assert (row["events_total"], row["prev_gap_s"], row["last_device"]) == (3, 1800.0, "tv")
    # T0+60 = 21:00 UTC on a Saturday
    assert (row["local_hour"], row["daypart"], row["is_weekend"]) == (21, "evening", 1)
    assert row["event_timestamp"] == datetime(2024, 1, 6, 21, 0, tzinfo=UTC)
    assert row["last_event_ts_ms"] == T0 + 60 * MIN


def test_feature_row_has_exactly_the_declared_columns_and_types():
    row = folded(random_log(np.random.default_rng(1), 30)).feature_row("u1")
    assert list(row) == list(FEATURE_COLUMNS)
    for name, kind in FEATURE_COLUMNS.items():
        if name in ("user_vector", "user_vector_model"):
            assert row[name] is None  # no item factors to fold against (tests/unit/test_user_vector.py)
        elif kind == list[str]:
            assert isinstance(row[name], list) and all(isinstance(x, str) for x in row[name])
        else:
            assert type(row[name]) is kind, name
    assert row["event_timestamp"].tzinfo == UTC


def test_empty_state_has_no_feature_row():
    with pytest.raises(ValueError, match="no events"):
        UserState().feature_row("u1")


def test_new_gap_session_after_a_longer_gap():
    state = folded([ev(1, T0), ev(2, T0 + 10 * MIN), ev(3, T0 + 41 * MIN, session="s9")])
    row = state.feature_row("u1")
    assert (row["session_events"], row["session_length_s"], row["session_id"]) == (1, 0.0, "s9")
    assert row["prev_gap_s"] == 31 * 60.0


def test_last_items_keep_n_distinct_most_recent_first():
    # N = 3: m4 m3 m2 remain; m2 re-seen moves to the front
    state = folded([ev(i, T0 + i * MIN, item=f"m{i}") for i in range(1, 5)] + [ev(5, T0 + 5 * MIN, item="m2")])
    assert state.feature_row("u1")["last_items"] == ["m2", "m4", "m3"]


def test_single_event_has_zero_prev_gap_and_session_length():
    row = folded([ev(1, T0)]).feature_row("u1")
    assert (row["prev_gap_s"], row["session_length_s"], row["session_events"]) == (0.0, 0.0, 1)


def test_local_time_uses_the_configured_timezone():
    # 2024-01-06T03:30Z is Friday 22:30 in New York
    cfg = FeatureConfig(timezone="America/New_York")
    row = folded([ev(1, 1_704_511_800_000)], cfg).feature_row("u1")
    assert (row["local_hour"], row["daypart"], row["is_weekend"]) == (22, "late_night", 0)


def test_chunk_invariance_over_random_splits():
    rng = np.random.default_rng(11)
    for trial in range(20):
        events = random_log(rng, int(rng.integers(1, 80)))
        whole = folded(events).feature_row("u1")
        cuts = np.sort(rng.choice(np.arange(1, len(events) + 1), rng.integers(0, len(events) + 1), replace=False))
        state = UserState()
        for chunk in np.split(np.arange(len(events)), cuts):
            # each batch may arrive in any order inside itself, and goes through the state store
            batch = [events[i] for i in rng.permutation(chunk)]
            state = UserState.from_json(state.to_json())
            state.apply(batch, CFG)
        row = state.feature_row("u1")
        for c in DECAYED_COLUMNS:  # one formula per batch: equal up to float rounding
            assert row[c] == pytest.approx(whole[c], rel=1e-12, abs=1e-12), (trial, c)
        assert {k: v for k, v in row.items() if k not in DECAYED_COLUMNS} == {
            k: v for k, v in whole.items() if k not in DECAYED_COLUMNS}, trial


def test_late_events_keep_order_independent_features_exact():
    rng = np.random.default_rng(5)
    events = random_log(rng, 60)
    in_order = folded(events).feature_row("u1")
    for seed in range(5):
        state = UserState()
        for i in np.random.default_rng(seed).permutation(len(events)):
            state.apply([events[i]], CFG)  # one event per batch, in arrival order
        row = state.feature_row("u1")
        for c in DECAYED_COLUMNS:
            assert row[c] == pytest.approx(in_order[c], rel=1e-12, abs=1e-12), c
        for c in ("events_total", "last_items", "prev_gap_s", "last_event_ts_ms", "event_timestamp",
                  "session_id", "last_device", "local_hour"):
            assert row[c] == in_order[c], c


def test_late_event_inserted_by_time_into_last_items_and_context_kept():
    state = folded([ev(1, T0, item="m1"), ev(2, T0 + 10 * MIN, item="m3", device="tv", session="s1")])
    state.apply([ev(3, T0 + 5 * MIN, item="m2", device="phone", session="s0")], CFG)
    row = state.feature_row("u1")
    assert row["last_items"] == ["m3", "m2", "m1"]
    assert (row["last_device"], row["session_id"], row["last_event_ts_ms"]) == ("tv", "s1", T0 + 10 * MIN)
    assert row["prev_gap_s"] == 5 * 60.0  # the two latest are now T0+5 and T0+10
    assert (row["session_events"], row["session_length_s"], row["events_total"]) == (3, 600.0, 3)


def test_late_event_older_than_a_re_seen_item_does_not_move_it():
    state = folded([ev(1, T0, item="m1"), ev(2, T0 + 2 * MIN, item="m2"), ev(3, T0 + 3 * MIN, item="m1")])
    state.apply([ev(4, T0 + MIN, item="m1")], CFG)
    assert state.feature_row("u1")["last_items"] == ["m1", "m2"]


def test_equal_time_items_order_by_item_id_whatever_the_arrival_order():
    a, b = ev(1, T0, item="ma"), ev(2, T0, item="mb")
    for first, second in ((a, b), (b, a)):
        state = folded([first])
        state.apply([second], CFG)
        assert state.feature_row("u1")["last_items"] == ["mb", "ma"]


def test_json_round_trip_is_exact_and_compact():
    events = random_log(np.random.default_rng(2), 50)
    state = folded(events + [ev(99, events[-1]["ts_ms"] + 7 * MIN, item="m9")])  # distinct latest two times
    text = state.to_json()
    back = UserState.from_json(text)
    assert back.to_json() == text
    assert np.array_equal(back.decayed, state.decayed)
    assert back.feature_row("u1") == state.feature_row("u1")
    assert b" " not in text and len(text) < 1200


def test_unknown_state_version_is_refused():
    text = folded([ev(1, T0)]).to_json().replace(b"[2,", b"[99,", 1)
    with pytest.raises(ValueError, match="version"):
        UserState.from_json(text)


# ---- ageing a stored row to serving time ----

def test_decay_features_to_ages_decayed_columns_only():
    row = folded([ev(1, T0, "watch", genres=("Action",), watch=3600.0, duration=60.0)]).feature_row("u1")
    # one full watch: Action 1, watch time 3600, watches 1; read 60 min later (2 half-lives): x 0.25
    aged = decay_features_to(row, T0 + 60 * MIN, CFG)
    assert aged["aff_action"] == pytest.approx(0.25, rel=1e-15)
    assert aged["watch_time_decayed"] == pytest.approx(900.0, rel=1e-15)
    assert aged["watches_decayed"] == pytest.approx(0.25, rel=1e-15)
    assert aged["time_since_last_event_s"] == 3600.0
    assert {k: v for k, v in aged.items() if k not in DECAYED_COLUMNS and k != "time_since_last_event_s"} == {
        k: v for k, v in row.items() if k not in DECAYED_COLUMNS
    }
    assert row["aff_action"] == 1.0  # the input row is left alone


def test_decay_features_to_before_the_latest_event_ages_nothing():
    row = folded([ev(1, T0, "watch", genres=("Action",), watch=3600.0, duration=60.0)]).feature_row("u1")
    aged = decay_features_to(row, T0 - 1_000, CFG)
    assert (aged["aff_action"], aged["time_since_last_event_s"]) == (1.0, 0.0)


def test_decay_features_to_accepts_numpy_scalars_from_a_store():
    row = folded([ev(1, T0, genres=("Drama",))]).feature_row("u1")
    stored = {**row, "last_event_ts_ms": np.int64(T0), "aff_drama": np.float32(0.25)}
    aged = decay_features_to(stored, T0 + 30 * MIN, CFG)
    assert aged["aff_drama"] == 0.125 and type(aged["aff_drama"]) is float
