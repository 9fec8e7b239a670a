"""Property-based tests: nothing the event contract accepts can make the fold raise or go non-finite,
however the events are batched, ordered, duplicated or delayed; a user whose fold fails is
dead-lettered while the others update."""
from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.stream_batch import DeadLetter, Parsed, _Pending, fold_batch, latest_only
from features.user_state import DECAYED_COLUMNS, UserState, fold_users
from features.user_vector import FoldIn, ItemFactors
from streamrec.config import FeatureConfig
from streamrec.events import MAX_WATCH_SECONDS, MIN_TS_MS, parse_event
from streamrec.vocabulary import GENRES

CFG = FeatureConfig(half_life_minutes=30, session_gap_minutes=30, last_n_items=3)
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
LATENESS_MS = 10 * 60_000

timestamps = st.one_of(
    st.integers(MIN_TS_MS, MAX_TS_MS),  # anywhere in the accepted range: gaps of decades
    st.integers(1_700_000_000_000, 1_700_000_000_000 + 3 * 3_600_000),  # dense: same ms, sessions, lateness
)
watch_seconds = st.one_of(st.just(0), st.just(MAX_WATCH_SECONDS), st.floats(0, MAX_WATCH_SECONDS), st.integers(0, MAX_WATCH_SECONDS))
durations = st.one_of(st.none(), st.just(float("nan")), st.just(0.0), st.floats(1e-9, 1e6))


@st.composite
def events(draw, user="u1", max_size=40):
    out = []
    for _ in range(draw(st.integers(1, max_size))):
        kind = draw(st.sampled_from(["click", "watch"]))
        out.append({
            "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))), "event_type": kind, "user_id": user,
            "item_id": draw(st.sampled_from(["a", "b", "c", "d", "ml:1", "x" * 128])), "ts_ms": draw(timestamps),
            "device": draw(st.sampled_from(["phone", "tv"])), "session_id": draw(st.sampled_from(["s1", "s2"])),
            "watch_seconds": draw(watch_seconds) if kind == "watch" else None,
            "genres": draw(st.lists(st.sampled_from([*GENRES, "unknown"]), max_size=5)), "duration_minutes": draw(durations),
        })
    return out


def contract_valid(event: dict) -> None:
    """The generated events are ones the validator accepts (so the properties are about real input)."""
    wire = {k: v for k, v in event.items() if k not in ("ts_ms", "genres", "duration_minutes") and v is not None}
    parse_event({**wire, "ts": event["ts_ms"]}, now_ms=MAX_TS_MS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.data())
def test_any_valid_events_in_any_batching_fold_without_error_to_finite_sums(log, data):
    for event in log:
        contract_valid(event)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(log)), max_size=len(log))))
    order = data.draw(st.permutations(range(len(log))))
    state = UserState()
    for chunk in np.split(np.array(order), cuts):
        state = UserState.from_json(state.to_json())  # through the store, as the stream job does
        assert fold_users([(state, [log[i] for i in chunk])], CFG) == [None]
    row = state.feature_row("u1")
    assert all(math.isfinite(row[c]) and row[c] >= 0 for c in DECAYED_COLUMNS)
    assert row["events_total"] == len(log)
    assert row["last_event_ts_ms"] == max(e["ts_ms"] for e in log)
    assert math.isfinite(row["session_length_s"]) and row["session_length_s"] >= 0
    whole = UserState()
    whole.apply(log, CFG)
    for c in DECAYED_COLUMNS:  # order and batching change nothing but float rounding
        assert row[c] == pytest.approx(whole.feature_row("u1")[c], rel=1e-9, abs=1e-300)


def pending(log: list[dict]) -> Parsed:
    parsed = Parsed(records=len(log))
    for n, e in enumerate(log):
        event = {k: e[k] for k in ("event_id", "event_type", "item_id", "ts_ms", "device", "session_id", "watch_seconds")}
        parsed.by_user.setdefault(e["user_id"], []).append(_Pending(event, f"raw-{n}".encode(), f"t/0/{n}", e["ts_ms"]))
    return parsed


# Live user vectors against factors that know "a" but not "b": a replay writes the same vectors too.
FOLD_IN = FoldIn.of(ItemFactors.of(["a", "z"], np.array([[1.0, 0.5], [0.2, 1.0]])), CFG)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(max_size=15), min_size=1, max_size=4), st.integers(1, 3))
def test_batches_account_for_every_event_and_replay_identically(logs, n_batches):
    logs = [[{**e, "user_id": f"u{k}"} for e in log] for k, log in enumerate(logs)]
    arrivals = [e for log in logs for e in log]
    arrivals += arrivals[: len(arrivals) // 3]  # redelivered copies
    catalog = {"a": {"genres": ["Comedy"], "duration_minutes": 90}, "b": {"genres": [], "duration_minutes": None}}
    stored: dict[str, bytes] = {}
    folded_before: dict[str, dict[str, int]] = {}  # the store's dedup rows: user -> event_id -> time
    accepted = late = duplicates = 0
    for chunk in np.array_split(np.arange(len(arrivals)), n_batches):
        parsed = pending([arrivals[i] for i in chunk])
        seen = {u: set(ids) for u, ids in folded_before.items()}
        folded = fold_batch(parsed, dict(stored), seen, catalog, CFG, LATENESS_MS, FOLD_IN)
        again = fold_batch(parsed, dict(stored), seen, catalog, CFG, LATENESS_MS, FOLD_IN)  # a replay after a crash
        assert (again.records, again.folded_ids, again.columns) == (folded.records, folded.folded_ids, folded.columns)
        assert all(d.reason == "late_event" for d in folded.dead)
        stored.update(folded.records)
        for user_id, event_id, ts in folded.folded_ids:
            folded_before.setdefault(user_id, {})[event_id] = ts
        for user_id, horizon in folded.horizons.items():  # what the store forgets: no later batch can need it
            folded_before[user_id] = {e: ts for e, ts in folded_before[user_id].items() if ts >= horizon}
        accepted, late, duplicates = accepted + len(folded.event_ms), late + len(folded.dead), duplicates + folded.duplicates
    assert accepted + late + duplicates == len(arrivals)
    # Each distinct event is folded at most once, whatever was redelivered or forgotten.
    assert accepted <= len({(e["user_id"], e["event_id"]) for e in arrivals})
    for record in stored.values():
        assert all(math.isfinite(v) for v in UserState.from_json(record).decayed)


def test_a_user_whose_fold_fails_is_dead_lettered_and_the_others_update():
    ok = {"event_id": "e1", "event_type": "click", "item_id": "a", "ts_ms": 1_700_000_000_000, "device": "tv",
          "session_id": "s", "watch_seconds": None, "user_id": "good"}
    # What the validator refuses today (seconds beyond any watch) but an older producer may have written.
    bad = [{**ok, "event_id": f"b{n}", "user_id": "bad", "event_type": "watch", "watch_seconds": 1e308} for n in range(2)]
    folded = fold_batch(pending([ok, *bad]), {}, {}, {}, CFG, LATENESS_MS)
    assert set(folded.records) == {"good"}
    assert [(d.reason, d.value) for d in folded.dead] == [("fold_error", b"raw-1"), ("fold_error", b"raw-2")]
    assert "not be finite" in folded.dead[0].detail
    assert folded.columns["user_id"] == ["good"]
    # The bad user's stored state is left as it was: a later valid event folds from there.
    later = fold_batch(pending([{**ok, "event_id": "e2", "user_id": "bad"}]), {}, {}, {}, CFG, LATENESS_MS)
    assert UserState.from_json(later.records["bad"]).events_total == 1


def test_malformed_events_fail_only_their_user():
    good = UserState()
    broken = UserState()
    event = {"event_id": "e", "event_type": "click", "item_id": "a", "ts_ms": 1_700_000_000_000, "device": "tv",
             "session_id": "s", "genres": ["Drama"], "duration_minutes": 90}
    errors = fold_users([(good, [event]), (broken, [{**event, "event_type": "rate"}])], CFG)
    assert errors[0] is None and "event_type" in errors[1]
    assert good.events_total == 1 and broken.last_ts_ms is None


def test_the_floor_keeps_each_users_latest_event():
    log = [{"event_id": f"e{n}", "event_type": "click", "item_id": "a", "ts_ms": 1_700_000_000_000 + n, "device": "tv",
            "session_id": "s", "watch_seconds": None, "user_id": f"u{n % 2}"} for n in range(5)]
    folded = latest_only(pending(log), {}, CFG)
    assert sorted(zip(folded.columns["user_id"], folded.columns["last_event_ts_ms"])) == [
        ("u0", 1_700_000_000_004), ("u1", 1_700_000_000_003)]
    assert len(folded.event_ms) == 5 and folded.records == {}


def test_dead_letter_keeps_the_original_bytes():
    from features.stream_batch import parse_records

    parsed = parse_records([b"{not json", None], ["t", "t"], [0, 1], [5, 6], [1, 2], max_bytes=1000, max_future_skew_s=300)
    assert parsed.invalid == [DeadLetter(b"{not json", "t/0/5", "not_json", parsed.invalid[0].detail),
                              DeadLetter(b"", "t/1/6", parsed.invalid[1].reason, parsed.invalid[1].detail)]


def test_a_users_events_over_several_partitions_are_judged_by_event_time():
    """Twelve events sent in time order, 2.5 min apart, landing round-robin on 4 partitions (another
    client's partitioner, or no key): read partition by partition, the later ones come first. In
    Kafka order 3 were dead-lettered as late; in event-time order none is."""
    from features.stream_batch import parse_records

    t = 1_700_000_000_000
    log = [{"event_id": str(uuid.UUID(int=n + 1)), "event_type": "click", "user_id": "u1", "item_id": "a",
            "ts": t + n * 150_000, "device": "tv", "session_id": "s"} for n in range(12)]
    values = [json.dumps(e).encode() for e in log]
    partitions = [n % 4 for n in range(12)]
    offsets = [n // 4 for n in range(12)]
    parsed = parse_records(values, ["t"] * 12, partitions, offsets, [t + 3_600_000] * 12, max_bytes=1000,
                           max_future_skew_s=300)
    folded = fold_batch(parsed, {}, {}, {}, CFG, LATENESS_MS)
    assert folded.count("late_event") == 0
    assert UserState.from_json(folded.records["u1"]).events_total == 12
