"""The synthetic world: determinism, the event contract, sessions, and ground truth that really bites."""
from __future__ import annotations

import dataclasses
import json
import uuid
from collections import defaultdict

import numpy as np
import pytest

from streamrec.errors import UserError
from streamrec.events import parse_event
from streamrec.vocabulary import DEVICES, GENRE_INDEX, GENRES
from streams.generator import SESSION_GAP_MS, generate_world
from streams.world import (
    Context,
    context_at,
    intent_distribution,
    item_record,
    load_world,
    pick_probabilities,
    preference_score,
    user_record,
)

FILES = ("items.jsonl", "users.jsonl", "events.jsonl", "sessions.jsonl", "world.json")


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    # The CLI's default size: big enough that context effects show clearly over sampling noise.
    summary = generate_world(out, users=200, items=500, days=7, seed=11)
    return out, summary


@pytest.fixture(scope="module")
def events(world_dir):
    return _jsonl(world_dir[0] / "events.jsonl")


@pytest.fixture(scope="module")
def items(world_dir):
    return {it["item_id"]: it for it in _jsonl(world_dir[0] / "items.jsonl")}


@pytest.fixture(scope="module")
def sessions(world_dir):
    return {s["session_id"]: s for s in _jsonl(world_dir[0] / "sessions.jsonl")}


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    kwargs = dict(users=12, items=60, days=2, start_ms=1_767_571_200_000)
    a = generate_world(tmp_path / "a", seed=5, **kwargs)
    b = generate_world(tmp_path / "b", seed=5, **kwargs)
    generate_world(tmp_path / "c", seed=6, **kwargs)
    a.pop("paths"), b.pop("paths")
    assert a["events"] > 0 and a == b
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for name in ("items.jsonl", "users.jsonl", "events.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes(), name


def test_summary_matches_the_files(world_dir, events, sessions):
    out, summary = world_dir
    assert summary["events"] == len(events)
    assert summary["clicks"] == sum(e["event_type"] == "click" for e in events)
    assert summary["watches"] == sum(e["event_type"] == "watch" for e in events)
    assert summary["sessions"] == len(sessions) == len({e["session_id"] for e in events})
    assert (summary["users"], summary["items"]) == (200, 500)
    assert summary["first_ts"] == events[0]["ts"] and summary["last_ts"] == events[-1]["ts"]
    assert summary["start_ms"] <= summary["first_ts"] and summary["end_ms"] == summary["start_ms"] + 7 * 86_400_000
    assert set(summary["paths"]) == {"items", "users", "events", "sessions", "world"}
    assert 20_000 <= len(events) <= 40_000  # what the default world aims at


def test_every_event_follows_the_contract(events, items):
    after_start = 1_767_571_200_000 + 365 * 86_400_000  # the validator's clock: after the whole world
    for e in events:
        assert set(e) == ({"event_id", "event_type", "user_id", "item_id", "ts", "device", "session_id"}
                          | ({"watch_seconds"} if e["event_type"] == "watch" else set()))
        assert str(uuid.UUID(e["event_id"])) == e["event_id"]
        assert e["event_type"] in ("click", "watch")
        assert type(e["ts"]) is int and e["device"] in DEVICES and e["item_id"] in items
        if e["event_type"] == "watch":
            assert type(e["watch_seconds"]) is float
            assert 0 <= e["watch_seconds"] <= items[e["item_id"]]["duration_minutes"] * 60
        assert parse_event(json.dumps(e), now_ms=after_start).to_dict() == e
    assert len({e["event_id"] for e in events}) == len(events)


def test_events_are_time_ordered_and_each_watch_follows_its_click(events):
    assert all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
    previous: dict[str, dict] = {}
    for e in events:
        if e["event_type"] == "watch":
            click = previous[e["user_id"]]
            assert click["event_type"] == "click"
            assert (click["item_id"], click["session_id"]) == (e["item_id"], e["session_id"])
        previous[e["user_id"]] = e
    watches = sum(e["event_type"] == "watch" for e in events)
    assert 0.3 < watches / (len(events) - watches) < 0.9


def test_sessions_are_gap_separated_and_keep_one_device(events, sessions):
    by_user = defaultdict(list)
    for e in events:
        by_user[e["user_id"]].append(e)
    for user_events in by_user.values():
        for a, b in zip(user_events, user_events[1:]):
            gap = b["ts"] - a["ts"]
            if a["session_id"] == b["session_id"]:
                assert gap < SESSION_GAP_MS and a["device"] == b["device"]
            else:
                assert gap > SESSION_GAP_MS
    picks = defaultdict(int)
    for e in events:
        picks[e["session_id"]] += e["event_type"] == "click"
    for sid, s in sessions.items():
        assert 1 <= s["picks"] == picks[sid] <= 15
        first = next(e for e in by_user[s["user_id"]] if e["session_id"] == sid)
        assert first["ts"] == s["start_ts"] and first["device"] == s["device"]
        assert context_at(s["start_ts"], s["device"]) == Context(s["daypart"], s["weekend"], s["device"])


def _share(clicks, items, genres):
    return np.mean([any(g in items[e["item_id"]]["genres"] for g in genres) for e in clicks])


def test_context_rules_bite_in_the_events(events, items, sessions):
    def clicks_in(daypart, device, weekend=None):
        def matches(s):
            return s["daypart"] == daypart and s["device"] == device and weekend in (None, s["weekend"])
        return [e for e in events if e["event_type"] == "click" and matches(sessions[e["session_id"]])]

    late_phone = clicks_in("late_night", "phone")
    weekend_tv = clicks_in("evening", "tv", weekend=True)
    assert len(late_phone) > 200 and len(weekend_tv) > 200
    light, big = ["Comedy", "Animation"], ["Action", "Sci-Fi", "Adventure"]
    assert _share(late_phone, items, light) > _share(weekend_tv, items, light) + 0.1
    assert _share(weekend_tv, items, big) > _share(late_phone, items, big) + 0.1
    minutes = lambda clicks: np.mean([items[e["item_id"]]["duration_minutes"] for e in clicks])  # noqa: E731
    assert minutes(weekend_tv) > minutes(late_phone) + 10


def test_session_intent_concentrates_picks_beyond_long_term_taste(events, items, sessions):
    clicks = [e for e in events if e["event_type"] == "click"]
    on_intent = np.mean([sessions[e["session_id"]]["intent"] in items[e["item_id"]]["genres"] for e in clicks])
    assert on_intent >= 0.7
    # What a live session feature sees: the previous click's genres predict the next click
    # better within a session than a click of the same user from another session does.
    by_user = defaultdict(list)
    for e in clicks:
        by_user[e["user_id"]].append(e)
    same, other = [], []
    for user_clicks in by_user.values():
        for a, b in zip(user_clicks, user_clicks[1:]):
            if a["session_id"] == b["session_id"]:
                shared = bool(set(items[a["item_id"]]["genres"]) & set(items[b["item_id"]]["genres"]))
                same.append(shared)
                c = next((c for c in reversed(user_clicks) if c["session_id"] != b["session_id"]), None)
                if c is not None:
                    other.append(bool(set(items[c["item_id"]]["genres"]) & set(items[b["item_id"]]["genres"])))
    assert np.mean(same) > np.mean(other) + 0.1


def test_load_world_gives_back_the_written_ground_truth(world_dir):
    out, _ = world_dir
    world = load_world(out)
    item_lines = (out / "items.jsonl").read_text(encoding="utf-8").splitlines()
    user_lines = (out / "users.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in item_lines] == [item_record(world, i) for i in range(len(world.item_ids))]
    assert [json.loads(line) for line in user_lines] == [user_record(world, u) for u in range(len(world.user_ids))]
    meta = json.loads((out / "world.json").read_text())
    assert meta["seed"] == world.seed == 11 and meta["context_rules"] == world.context_rules
    genres_per_item = world.item_genres.sum(axis=1)
    assert genres_per_item.min() >= 1 and genres_per_item.max() <= 3
    assert world.item_genres[:, GENRE_INDEX["Drama"]].sum() > world.item_genres[:, GENRE_INDEX["Western"]].sum()


def test_ground_truth_probabilities_follow_intent_and_context(world_dir):
    world = load_world(world_dir[0])
    late_phone = Context("late_night", False, "phone")
    weekend_tv = Context("evening", True, "tv")
    comedy = GENRE_INDEX["Comedy"]
    for u in range(len(world.user_ids)):
        p = pick_probabilities(world, u, late_phone)
        assert p.sum() == pytest.approx(1.0) and (p >= 0).all()
        assert intent_distribution(world, u, late_phone)[comedy] > intent_distribution(world, u, weekend_tv)[comedy]
        given = pick_probabilities(world, u, late_phone, intent=comedy)
        assert given[world.item_genres[:, comedy]].sum() >= world.model.intent_share
    # Without the rules the context makes no difference at all.
    no_rules = dataclasses.replace(world, context_rules=[])
    np.testing.assert_allclose(pick_probabilities(no_rules, 0, late_phone), pick_probabilities(no_rules, 0, weekend_tv))
    user, item = world.user_ids[0], world.item_ids[0]
    assert preference_score(world, user, item, late_phone) == pick_probabilities(world, 0, late_phone)[0]
    assert preference_score(world, user, item, late_phone, intent=GENRES[comedy]) == pytest.approx(
        pick_probabilities(world, 0, late_phone, intent=comedy)[0])
    with pytest.raises(KeyError, match="nobody"):
        preference_score(world, "nobody", item, late_phone)


def test_bad_parameters_and_missing_world_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="at least one user"):
        generate_world(tmp_path / "w", users=0, items=10, days=1, seed=1)
    with pytest.raises(UserError, match="days must be positive"):
        generate_world(tmp_path / "w", users=1, items=10, days=0, seed=1)
    with pytest.raises(UserError, match="missing world.json, items.jsonl, users.jsonl"):
        load_world(tmp_path)
