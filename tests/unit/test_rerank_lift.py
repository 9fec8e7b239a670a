"""The re-rank evaluation's pure parts: which held-out sessions count, their context type and relevant items
(``serving.rerank_eval.sessions``), the metrics and latencies (``serving.rerank_eval.lift``) and the paired
bootstrap CIs (``models.paired_bootstrap``)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.paired_bootstrap import by_group, paired_lift
from serving.rerank_eval.lift import latency_summary, session_metrics
from serving.rerank_eval.sessions import (
    NO_RULE,
    context_type,
    held_out_sessions,
    usual_contexts,
)
from streamrec.errors import UserError
from streams.world import CONTEXT_RULES

H = 3_600_000


def session(sid, user, start_h, daypart, weekend, device, intent="Comedy", length_h=0.5):
    return {"session_id": sid, "user_id": user, "start_ts": int(start_h * H), "end_ts": int((start_h + length_h) * H),
            "device": device, "daypart": daypart, "weekend": weekend, "intent": intent}


def event(user, item, hour, kind="watch"):
    return {"user_id": user, "item_id": item, "ts_ms": int(hour * H), "event_type": kind}


# ---------------------------------------------------------------- sessions


@pytest.mark.parametrize("ctx, expected", [
    (("late_night", False, "phone"), "late_night_phone+late_night"),
    (("evening", True, "tv"), "weekend_tv_evening"),
    (("morning", False, "phone"), "morning+commute_phone"),
    (("afternoon", False, "desktop"), NO_RULE),
])
def test_context_type_names_every_matching_rule(ctx, expected):
    assert context_type(*ctx, CONTEXT_RULES) == expected


def test_usual_context_is_the_most_frequent_and_ties_go_to_the_first_seen():
    sessions = pd.DataFrame([
        session("a1", "a", 1, "evening", False, "tv"), session("a2", "a", 2, "morning", False, "phone"),
        session("a3", "a", 3, "morning", False, "phone"),
        session("b1", "b", 1, "evening", True, "tv"), session("b2", "b", 2, "late_night", False, "phone"),
    ])
    usual = usual_contexts(sessions)
    assert tuple(usual.loc["a"]) == ("morning", False, "phone")
    assert tuple(usual.loc["b"]) == ("evening", True, "tv")


def world_log():
    """User a: usually on the TV in the evening; after the cutoff (hour 100) one usual and one shifted session.
    User b: no session before the cutoff. User c: a shifted session whose only watch is an item seen before."""
    sessions = pd.DataFrame([
        session("a1", "a", 10, "evening", False, "tv"), session("a2", "a", 30, "evening", False, "tv"),
        session("a3", "a", 50, "morning", False, "phone"),
        session("a4", "a", 101, "evening", False, "tv"),  # usual context
        session("a5", "a", 120, "late_night", False, "phone", intent="Horror"),  # shifted
        session("b1", "b", 110, "late_night", False, "phone"),  # no history
        session("c1", "c", 20, "evening", False, "tv"), session("c2", "c", 130, "morning", False, "phone"),
    ])
    events = pd.DataFrame([
        event("a", "i1", 10), event("a", "i2", 120, "click"), event("a", "i2", 120.01), event("a", "i3", 120.2),
        event("a", "i4", 120.3, "click"),  # clicked, not watched: not relevant
        event("a", "i9", 140),  # after the session ended
        event("c", "i5", 20), event("c", "i5", 130.1),  # watched again: not new
        event("b", "i6", 110.1),
    ])
    return sessions, events


def test_held_out_sessions_keep_the_shifted_ones_with_new_watches():
    sessions, events = world_log()
    kept, counts = held_out_sessions(sessions, events, cutoff_ms=100 * H, rules=CONTEXT_RULES)
    assert kept["session_id"].tolist() == ["a5"]
    row = kept.iloc[0]
    assert row["relevant"] == ("i2", "i3")
    assert row["context_type"] == "late_night_phone+late_night"
    assert row["usual"] == "evening/weekday/tv"
    assert row["intent"] == "Horror"
    assert counts == {"held_out": 4, "no_history": 1, "usual_context": 1, "no_new_watch": 1, "kept": 1}


def test_held_out_sessions_say_when_nothing_is_after_the_cutoff():
    sessions, events = world_log()
    with pytest.raises(UserError, match="no session starts after the cutoff"):
        held_out_sessions(sessions, events, cutoff_ms=1000 * H, rules=CONTEXT_RULES)


# ---------------------------------------------------------------- metrics


def test_session_metrics_against_hand_computed_values():
    orders = [["x", "a", "y"], ["a", "b"], ["p", "q"]]
    relevant = [("a",), ("a", "b", "c"), ("z",)]
    m = session_metrics(orders, relevant, k=10)
    ideal3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@10"] == pytest.approx([1 / math.log2(3), (1 + 1 / math.log2(3)) / ideal3, 0.0])
    assert m["hr@10"].tolist() == [1.0, 1.0, 0.0]


def test_session_metrics_only_count_the_top_k():
    m = session_metrics([[str(n) for n in range(12)]], [("11",)], k=10)
    assert m["ndcg@10"][0] == 0.0 and m["hr@10"][0] == 0.0


def test_session_metrics_refuse_a_session_without_relevant_items():
    with pytest.raises(UserError, match="no relevant item"):
        session_metrics([["a"]], [()])


# ---------------------------------------------------------------- bootstrap


def test_paired_bootstrap_ci_holds_the_true_difference_and_is_seeded():
    rng = np.random.default_rng(7)
    base = rng.random(400)
    treated = np.clip(base + 0.1 + rng.normal(0, 0.05, 400), 0, None)
    true_diff = float((treated - base).mean())
    first = paired_lift(base, treated, seed=3)
    assert first["diff_ci"][0] < true_diff < first["diff_ci"][1]
    assert first["diff"] == pytest.approx(true_diff)
    assert first["ci_excludes_zero"]
    assert first["relative"] == pytest.approx(treated.mean() / base.mean() - 1)
    assert first["relative_ci"][0] < first["relative"] < first["relative_ci"][1]
    assert paired_lift(base, treated, seed=3) == first
    assert paired_lift(base, treated, seed=4)["diff_ci"] != first["diff_ci"]


def test_no_difference_gives_a_ci_around_zero():
    rng = np.random.default_rng(1)
    base, noise = rng.random(300), rng.normal(0, 0.1, 300)
    lift = paired_lift(base, base + noise - noise.mean())
    assert lift["diff_ci"][0] < 0 < lift["diff_ci"][1]
    assert not lift["ci_excludes_zero"]


def test_strata_weigh_each_seed_the_same():
    # Seed 0 has 3 sessions gaining 0.3, seed 1 one session gaining 0.1: the mean over seeds is 0.2.
    base = np.array([0.1, 0.1, 0.1, 0.5])
    treated = np.array([0.4, 0.4, 0.4, 0.6])
    lift = paired_lift(base, treated, strata=np.array([0, 0, 0, 1]))
    assert lift["diff"] == pytest.approx(0.2)
    assert lift["base"] == pytest.approx(0.3)
    # Every replicate keeps each seed's (constant) gain, so the interval is a point.
    assert lift["diff_ci"] == pytest.approx([0.2, 0.2])


def test_a_zero_baseline_has_no_relative_lift():
    lift = paired_lift(np.zeros(5), np.full(5, 0.5))
    assert lift["relative"] is None and lift["relative_ci"] is None
    assert lift["diff"] == pytest.approx(0.5)


def test_paired_values_must_match():
    with pytest.raises(ValueError, match="one length"):
        paired_lift(np.zeros(3), np.zeros(4))
    with pytest.raises(UserError, match="no session"):
        paired_lift(np.zeros(0), np.zeros(0))


def test_by_group_splits_and_orders_by_size():
    base = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    treated = base + np.array([0.1, 0.1, 0.1, -0.1, -0.1])
    groups = by_group(base, treated, ["a", "a", "a", "b", "b"])
    assert list(groups) == ["a", "b"]
    assert groups["a"]["sessions"] == 3 and groups["a"]["diff"] == pytest.approx(0.1)
    assert groups["b"]["diff"] == pytest.approx(-0.1)


def test_latency_summary():
    s = latency_summary([100.0, 200.0, 300.0, 400.0, 5000.0])
    assert s == {"calls": 5, "p50_ms": 300.0, "p95_ms": pytest.approx(4080.0), "max_ms": 5000.0}
    assert latency_summary([]) == {"calls": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
