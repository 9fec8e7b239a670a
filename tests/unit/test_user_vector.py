"""features.user_vector: the fold-in of a user's recent interactions against fixed item factors."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from features.offline import compute_features, feature_history
from features.user_state import UserState, decay_features_to, feature_columns, fold_users
from features.user_vector import RECENT_INTERACTIONS, FactorsFile, FoldIn, ItemFactors, fold_in_many
from streamrec.config import FeatureConfig

CFG = FeatureConfig()
HOUR = 3_600_000
T0 = 1_700_000_000_000
CLUSTERS, PER_CLUSTER, DIM = 3, 20, 8


def clustered_factors(seed: int = 0) -> ItemFactors:
    """Items in CLUSTERS tight groups around random centres; ids ``c<cluster>-<n>``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (CLUSTERS, DIM))
    rows = np.vstack([centres[c] + rng.normal(0, 0.15, (PER_CLUSTER, DIM)) for c in range(CLUSTERS)])
    ids = [f"c{c}-{n}" for c in range(CLUSTERS) for n in range(PER_CLUSTER)]
    return ItemFactors.of(ids, rows)


def watch(item_id: str, ts_ms: int, n: int = 0, seconds: float = 3000.0) -> dict:
    return {"event_id": f"e-{item_id}-{ts_ms}-{n}", "event_type": "watch", "item_id": item_id, "ts_ms": ts_ms,
            "device": "tv", "session_id": "s1", "watch_seconds": seconds, "genres": ["Drama"], "duration_minutes": 50}


def vector_of(events: list[dict], factors: ItemFactors, cfg: FeatureConfig = CFG) -> np.ndarray | None:
    state = UserState()
    state.apply(events, cfg)
    (vector,) = feature_columns([("u", state)], FoldIn.of(factors, cfg))["user_vector"]
    return None if vector is None else np.array(vector)


def top(vector: np.ndarray, factors: ItemFactors, k: int) -> list[str]:
    return [factors.ids[i] for i in np.argsort(-(factors.factors @ vector), kind="stable")[:k]]


def test_a_user_who_watched_one_cluster_gets_that_cluster_as_top_k():
    factors = clustered_factors()
    for cluster in range(CLUSTERS):
        watched = [f"c{cluster}-{n}" for n in (0, 1, 2)]
        vector = vector_of([watch(item, T0 + n * 60_000) for n, item in enumerate(watched)], factors)
        assert vector is not None
        assert {item.split("-")[0] for item in top(vector, factors, PER_CLUSTER)} == {f"c{cluster}"}


def test_what_was_watched_just_now_outweighs_what_was_watched_hours_ago():
    factors = clustered_factors()
    old = [watch(f"c0-{n}", T0 + n * 60_000) for n in range(5)]
    new = [watch("c1-0", T0 + 6 * HOUR)]  # six half-lives later: c0's weights are 1/64 of c1's
    assert {item.split("-")[0] for item in top(vector_of(old + new, factors), factors, 10)} == {"c1"}


def test_the_solution_is_the_ridge_least_squares_fit():
    rng = np.random.default_rng(3)
    y, c, lam = rng.normal(0, 1, (5, DIM)), rng.uniform(0.1, 2.0, 5), 0.3
    direct = np.linalg.solve(y.T @ np.diag(c) @ y + lam * np.eye(DIM), y.T @ c)
    np.testing.assert_allclose(fold_in_many(y[None], c[None], lam)[0], direct, rtol=1e-9, atol=1e-12)


def test_regularization_shrinks_the_vector_and_must_be_positive():
    factors = clustered_factors()
    events = [watch(f"c0-{n}", T0 + n * 60_000) for n in range(3)]
    norms = [np.linalg.norm(vector_of(events, factors, dataclasses.replace(CFG, fold_in_regularization=lam)))
             for lam in (0.01, 0.1, 1.0, 10.0)]
    assert norms == sorted(norms, reverse=True) and norms[-1] < norms[0] / 2
    with pytest.raises(ValueError, match="regularization"):
        fold_in_many(np.ones((1, 1, DIM)), np.ones((1, 1)), 0.0)


def test_items_unknown_to_the_factors_are_skipped():
    factors = clustered_factors()
    known = [watch("c2-0", T0), watch("c2-1", T0 + 1000)]
    unknown = [watch("added-after-training", T0 + 500), watch("another-new-one", T0 + 1000)]  # no later: same ref
    with_unknown = vector_of(known + unknown, factors)
    assert with_unknown is not None
    np.testing.assert_array_equal(with_unknown, vector_of(known, factors))
    assert vector_of(unknown, factors) is None


def test_serving_ages_the_row_but_carries_the_vector_as_stored():
    factors = clustered_factors()
    state = UserState()
    state.apply([watch("c0-0", T0), watch("c0-1", T0 + 1000)], CFG)
    row = state.feature_row("u") | {k: v[0] for k, v in feature_columns([("u", state)], FoldIn.of(factors, CFG)).items()}
    aged = decay_features_to(row, T0 + 5 * HOUR, CFG)
    assert aged["watches_decayed"] < row["watches_decayed"]
    assert aged["user_vector"] == row["user_vector"] and aged["user_vector_model"] == factors.version


def test_no_factors_no_vector():
    state = UserState()
    state.apply([watch("c0-0", T0)], CFG)
    columns = feature_columns([("u", state)])
    assert columns["user_vector"] == [None] and columns["user_vector_model"] == [None]


def test_the_vector_is_deterministic_and_does_not_depend_on_batching_or_the_other_users():
    factors, rng = clustered_factors(), np.random.default_rng(5)
    events = [watch(f"c{rng.integers(CLUSTERS)}-{rng.integers(PER_CLUSTER)}", T0 + int(t), n, float(rng.uniform(60, 3000)))
              for n, t in enumerate(np.sort(rng.integers(0, 4 * HOUR, 40)))]
    whole, split = UserState(), UserState()
    whole.apply(events, CFG)
    for lo in range(0, len(events), 7):  # the same events in micro-batches, shuffled within each
        chunk = events[lo:lo + 7]
        split.apply([chunk[i] for i in rng.permutation(len(chunk))], CFG)
    assert whole.recent == split.recent and len(whole.recent) == RECENT_INTERACTIONS
    replayed = UserState.from_json(whole.to_json())  # a replay starts from the stored state
    others = [(f"o{n}", UserState()) for n in range(6)]
    for n, (_, other) in enumerate(others):
        other.apply([watch(f"c0-{m}", T0 + m) for m in range(n % 3 + 1)], CFG)
    fold = FoldIn.of(factors, CFG)
    alone = feature_columns([("u", whole)], fold)["user_vector"][0]
    assert alone is not None
    assert feature_columns([("u", split)], fold)["user_vector"][0] == alone
    assert feature_columns([("u", replayed)], fold)["user_vector"][0] == alone
    assert feature_columns([*others, ("u", whole)], fold)["user_vector"][-1] == alone  # bit for bit
    assert feature_columns([("u", whole)], fold)["user_vector_model"] == [factors.version]


def test_a_failed_fold_leaves_the_recent_events_alone():
    state = UserState()
    state.apply([watch("c0-0", T0)], CFG)
    before = list(state.recent)
    bad = {**watch("c0-1", T0 + 1), "watch_seconds": None}
    assert fold_users([(state, [bad])], CFG)[0] is not None
    assert state.recent == before


def test_a_state_stored_before_live_vectors_loads_without_recent_events():
    state = UserState()
    state.apply([watch("c0-0", T0)], CFG)
    stored = state.to_json()
    old = stored[: stored.rindex(b",[[")] + b"]"  # the array without its last field
    loaded = UserState.from_json(old)
    assert loaded.recent == [] and loaded.feature_row("u")["events_total"] == 1


def test_factors_save_load_and_follow_retraining(tmp_path):
    factors = clustered_factors()
    path = tmp_path / "retrieval" / "item_factors.npz"
    file = FactorsFile(path)
    assert file.current() is None  # no model trained yet
    factors.save(path)
    loaded = file.current()
    assert loaded is not None and loaded.ids == factors.ids and loaded.version == factors.version
    np.testing.assert_array_equal(loaded.factors, factors.factors)
    assert file.current() is loaded  # not read again while unchanged
    retrained = clustered_factors(seed=1)
    retrained.save(path)
    os.utime(path, ns=(1, 1))  # a retraining within the clock's resolution still shows in the stat
    newer = file.current()
    assert newer is not None and newer.version == retrained.version != factors.version


def test_the_batch_fold_gives_each_history_row_the_vector_of_its_state():
    factors, fold = clustered_factors(), FoldIn.of(clustered_factors(), CFG)
    events = [{**watch(item, T0 + n * 60_000, n), "user_id": user}
              for n, (user, item) in enumerate([("a", "c0-0"), ("b", "c1-0"), ("a", "c0-1"), ("a", "gone"), ("b", "c1-2")])]
    history = feature_history(events, {}, CFG, fold)
    final = compute_features(events, {}, CFG, fold).set_index("user_id")
    for user, rows in history.groupby("user_id"):
        assert rows["user_vector"].iloc[-1] == final.loc[user, "user_vector"]
        assert set(rows["user_vector_model"]) == {factors.version}
    # a's rows: after c0-0, after c0-1, then an item the factors do not know: only a minute's more decay
    a = history[history["user_id"] == "a"]["user_vector"].tolist()
    assert not np.allclose(a[0], a[1], rtol=0.05) and np.allclose(a[2], a[1], rtol=0.05)
