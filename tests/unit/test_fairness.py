"""The fairness audit's figures: known inputs give known ratios, CIs cover the truth of synthetic data, the
exposure re-rank moves slots to the less popular deciles."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.fairness import (
    ExposureRerank,
    boost_weights,
    exposure,
    exposure_counts,
    group_labels,
    group_quality,
    popularity_groups,
    top_k,
)


def test_popularity_deciles_rank_items_by_train_count_ties_by_index():
    counts = np.array([5, 0, 9, 0, 3, 7, 1, 2, 8, 4, 6, 10, 0, 12, 11, 2, 1, 3, 9, 5])  # 20 items
    groups = popularity_groups(counts)
    assert np.bincount(groups).tolist() == [2] * 10
    # The three never-watched items are the least popular: items 1 and 3 in D1, item 12 in D2.
    assert groups[[1, 3, 12]].tolist() == [0, 0, 1]
    assert groups[[13, 14]].tolist() == [9, 9]  # the two most watched
    assert group_labels()[groups[13]] == "D10" and group_labels()[0] == "D1"
    assert np.bincount(popularity_groups(np.arange(23))).tolist() == [3, 2, 2, 3, 2, 2, 3, 2, 2, 2]
    with pytest.raises(ValueError, match="9 items cannot make 10"):
        popularity_groups(np.ones(9))


def test_known_group_means_give_known_ratios():
    values = np.array([1.0] * 6 + [0.5] * 4 + [0.9, 0.1])
    labels = ["a"] * 6 + ["b"] * 4 + ["c"] * 2  # c is below min_users: listed, not compared
    q = group_quality(values, labels, min_users=3, n_boot=200)
    assert q["overall"] == pytest.approx(values.mean())
    assert list(q["groups"]) == ["a", "b", "c"]
    a, b, c = (q["groups"][g] for g in "abc")
    assert (a["users"], a["mean"], b["mean"], c["mean"]) == (6, 1.0, 0.5, 0.5)
    assert a["ratio_to_all"] == pytest.approx(1.0 / values.mean())
    assert b["ratio_to_all"] == pytest.approx(0.5 / values.mean())
    assert c["ratio_to_all"] is None and c["mean_ci"] is None
    assert q["disparity"]["ratio"] == pytest.approx(0.5)
    assert (q["disparity"]["worst"], q["disparity"]["best"]) == ("b", "a")
    # Constant groups: every replicate is the point estimate.
    assert a["mean_ci"] == [1.0, 1.0] and q["disparity"]["ci"] == pytest.approx([0.5, 0.5])


def test_groups_follow_the_given_order_then_sorted():
    q = group_quality(np.ones(9), ["56+"] * 3 + ["<18"] * 3 + ["x"] * 3, order=["<18", "18-24", "56+"], n_boot=50)
    assert list(q["groups"]) == ["<18", "56+", "x"]


def test_one_comparable_group_has_no_disparity():
    q = group_quality(np.ones(7), ["a"] * 6 + ["b"], n_boot=50)
    assert q["disparity"] is None and q["groups"]["a"]["ratio_to_all"] is None


@pytest.mark.parametrize("p_worst, p_best", [(0.3, 0.6), (0.5, 0.5)])
def test_disparity_ci_covers_the_true_ratio(p_worst, p_best):
    """Users' hits drawn with known group rates: the 95 % CI of worst/best holds p_worst/p_best in most draws,
    parity (equal rates) included."""
    truth, covered, runs = p_worst / p_best, 0, 60
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        values = np.concatenate([rng.random(150) < p_worst, rng.random(250) < p_best]).astype(float)
        labels = ["w"] * 150 + ["b"] * 250
        q = group_quality(values, labels, n_boot=400, seed=seed)
        low, high = q["disparity"]["ci"]
        covered += low <= truth <= high
    assert covered / runs >= 0.85


def test_group_ratio_to_all_ci_covers_the_truth():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0.2, 0.1, 300), rng.normal(0.4, 0.1, 300)])
    q = group_quality(values, ["low"] * 300 + ["high"] * 300, n_boot=1000)
    low, high = q["groups"]["low"]["ratio_to_all_ci"]
    assert low <= 0.2 / 0.3 <= high and high - low < 0.2


def test_top_k_skips_seen_items_and_pads_short_lists():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [1.0, 2.0, 3.0, 4.0]])
    seen = np.array([[False, True, False, False], [True, True, True, False]])
    assert top_k(scores, seen, 2).tolist() == [[3, 2], [3, -1]]


def test_exposure_shares_and_ratios_of_known_lists():
    item_group = np.array([0, 0, 1, 1])  # two groups of two items: catalog share 1/2 each
    train_counts = np.array([1, 0, 3, 6])
    ranked = np.array([[2, 3, 0], [3, 2, -1], [2, 1, -1]])  # group 1 holds 5 of 7 slots
    counts = exposure_counts(ranked, item_group, 2)
    assert counts.tolist() == [[1, 2], [0, 2], [1, 1]]
    e = exposure(counts, item_group, train_counts, n_boot=200)
    d1, d2 = e["groups"]["D1"], e["groups"]["D2"]
    assert e["slots"] == 7
    assert (d1["catalog_share"], d1["interaction_share"]) == (0.5, 0.1)
    assert d1["exposure_share"] == pytest.approx(2 / 7) and d2["exposure_share"] == pytest.approx(5 / 7)
    assert d1["ratio"] == pytest.approx(4 / 7) and d2["ratio"] == pytest.approx(10 / 7)
    assert e["disparity"]["ratio"] == pytest.approx(0.4)
    assert e["distance"]["value"] == pytest.approx(5 / 7 - 1 / 2)
    assert (e["disparity"]["worst"], e["disparity"]["best"]) == ("D1", "D2")
    low, high = e["disparity"]["ci"]
    assert low <= 0.4 <= high


def test_exposure_ci_covers_the_true_share():
    """Lists drawn with a known chance (0.2) that a slot shows group 0: the CI of its share holds 0.2."""
    rng = np.random.default_rng(5)
    item_group = np.array([0] * 5 + [1] * 5)
    ranked = np.where(rng.random((400, 10)) < 0.2, rng.integers(0, 5, (400, 10)), rng.integers(5, 10, (400, 10)))
    e = exposure(exposure_counts(ranked, item_group, 2), item_group, np.ones(10), n_boot=1000)
    low, high = e["groups"]["D1"]["exposure_share_ci"]
    assert low <= 0.2 <= high and high - low < 0.05
    low, high = e["disparity"]["ci"]
    assert low <= 0.25 <= high  # (0.2 / 0.5) / (0.8 / 0.5)


def test_boost_weights_favour_the_least_popular():
    assert boost_weights(3).tolist() == [1.0, 0.5, 0.0]
    assert boost_weights()[0] == 1.0 and boost_weights()[-1] == 0.0 and len(boost_weights()) == 10


class PopularityScores:
    """A recommender that ranks by popularity plus a little per-user taste (a stand-in for any fitted model)."""

    def __init__(self, popularity: np.ndarray, n_users: int, taste: float = 0.25):
        noise = np.random.default_rng(0).normal(0, taste * popularity.std(), (n_users, popularity.size))
        self.scores = popularity + noise

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> PopularityScores:
        return self

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        full = self.scores[np.asarray(user_idx)]
        return full if item_idx is None else np.take_along_axis(full, item_idx, axis=1)


def _exposure_of(model, users: np.ndarray, item_group: np.ndarray, counts: np.ndarray) -> dict:
    ranked = top_k(model.score(users, None), np.zeros((len(users), len(item_group)), bool), 10)
    return exposure(exposure_counts(ranked, item_group, 10), item_group, counts, n_boot=200)


def test_exposure_rerank_reduces_exposure_disparity():
    counts = np.sort(np.random.default_rng(1).zipf(1.6, 200))[::-1] + np.arange(200)  # long tail, no ties
    item_group = popularity_groups(counts)
    users = np.arange(300)
    base = PopularityScores(np.log(counts), len(users))
    distance, low_share = {}, {}
    for strength in (0.0, 0.2, 0.4):
        after = _exposure_of(ExposureRerank(base, item_group, boost_weights(), strength), users, item_group, counts)
        distance[strength] = after["distance"]["value"]
        low_share[strength] = sum(after["groups"][g]["exposure_share"] for g in group_labels()[:5])
    assert distance[0.0] > 0.7 and after["disparity"]["ratio"] >= 0  # popularity fills the top deciles
    assert distance[0.0] > distance[0.2] > distance[0.4]
    assert low_share[0.0] < low_share[0.2] < low_share[0.4]


def test_rerank_keeps_the_order_at_strength_zero_and_scores_candidates_from_the_same_row():
    popularity = np.linspace(0, 1, 30)
    base = PopularityScores(popularity, 4)
    users = np.arange(4)
    item_group = popularity_groups(popularity)
    none = ExposureRerank(base, item_group, np.ones(10), 0.0)
    assert (np.argsort(-none.score(users), axis=1) == np.argsort(-base.score(users), axis=1)).all()
    strong = ExposureRerank(base, item_group, boost_weights(), 0.5)
    candidates = np.tile(np.array([0, 7, 29, 15]), (4, 1))
    assert np.array_equal(strong.score(users, candidates), np.take_along_axis(strong.score(users), candidates, 1))
    with pytest.raises(ValueError, match="strength must be >= 0"):
        ExposureRerank(base, item_group, np.ones(10), -1.0)
