"""Ranking metrics against hand-computed cases, and the evaluation protocols on models whose answer is known."""
import numpy as np
import pandas as pd
import pytest

from models.data import label_positives, split_by_time, split_loo
from models.metrics import (
    average_precision_at_k,
    catalog_coverage,
    hit_matrix,
    hr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from models.protocols import evaluate_full, evaluate_loo
from streamrec.errors import UserError

L2_3, L2_5 = np.log2(3), np.log2(5)


def test_metrics_of_one_list_with_hits_at_ranks_2_and_4():
    hits = np.array([[False, True, False, True, False]])
    n_rel = np.array([3])
    # k=3: one hit, at rank 2.
    assert hr_at_k(hits, 3) == pytest.approx([1.0])
    assert precision_at_k(hits, 3) == pytest.approx([1 / 3])
    assert recall_at_k(hits, n_rel, 3) == pytest.approx([1 / 3])
    # DCG = 1/log2(3); ideal: 3 hits on top = 1 + 1/log2(3) + 1/log2(4)
    assert ndcg_at_k(hits, n_rel, 3) == pytest.approx([(1 / L2_3) / (1 + 1 / L2_3 + 0.5)])
    # AP@3 = P@2 / min(3, 3) = (1/2) / 3
    assert average_precision_at_k(hits, n_rel, 3) == pytest.approx([1 / 6])
    # k=4: hits at ranks 2 and 4.
    assert precision_at_k(hits, 4) == pytest.approx([2 / 4])
    assert recall_at_k(hits, n_rel, 4) == pytest.approx([2 / 3])
    # DCG = 1/log2(3) + 1/log2(5) = 1.0616; ideal = 2.1309
    assert ndcg_at_k(hits, n_rel, 4) == pytest.approx([(1 / L2_3 + 1 / L2_5) / (1 + 1 / L2_3 + 0.5)])
    # AP@4 = (P@2 + P@4) / min(3, 4) = (1/2 + 2/4) / 3
    assert average_precision_at_k(hits, n_rel, 4) == pytest.approx([1 / 3])


def test_ideal_dcg_and_ap_use_min_of_relevant_and_k():
    # 5 relevant, k=2, both slots hit: a perfect top-2, so NDCG = AP = 1 while recall = 2/5.
    hits = np.array([[True, True, False]])
    assert ndcg_at_k(hits, np.array([5]), 2) == pytest.approx([1.0])
    assert average_precision_at_k(hits, np.array([5]), 2) == pytest.approx([1.0])
    assert recall_at_k(hits, np.array([5]), 2) == pytest.approx([0.4])


def test_batch_gives_one_value_per_user():
    hits = np.array([[True, False], [False, False], [False, True]])
    n_rel = np.array([1, 2, 1])
    assert hr_at_k(hits, 2) == pytest.approx([1, 0, 1])
    # user 3: one relevant item at rank 2 -> DCG 1/log2(3), ideal 1
    assert ndcg_at_k(hits, n_rel, 2) == pytest.approx([1, 0, 1 / L2_3])
    # user 3: AP = P@2 / 1 = 1/2
    assert average_precision_at_k(hits, n_rel, 2) == pytest.approx([1, 0, 0.5])


def test_hit_matrix_treats_empty_slots_as_misses():
    # The -1 slot must not be read as item 0 (relevant) or the last item.
    ranked = np.array([[-1, 0, 2]])
    relevant = np.array([[True, False, True]])
    assert hit_matrix(ranked, relevant).tolist() == [[False, True, True]]


def test_catalog_coverage_counts_distinct_items_shown():
    # items 0, 1, 2 shown out of 10; empty slots ignored
    assert catalog_coverage(np.array([[0, 1], [1, 2], [-1, -1]]), 10) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="outside"):
        catalog_coverage(np.array([[10]]), 10)


def test_bad_input_is_an_error_not_a_zero():
    hits = np.array([[True, False]])
    with pytest.raises(UserError, match="no relevant item"):
        ndcg_at_k(hits, np.array([0]), 2)
    with pytest.raises(UserError, match="k must be"):
        precision_at_k(hits, 0)
    with pytest.raises(ValueError, match="fewer than k"):
        hr_at_k(hits, 3)
    with pytest.raises(ValueError, match="more hits"):
        recall_at_k(np.array([[True, True]]), np.array([1]), 2)
    with pytest.raises(UserError, match="no user"):
        hr_at_k(np.zeros((0, 5), bool), 5)


# ---------------------------------------------------------------- protocols


def _random_events(n_users=300, n_items=150, per_user=8, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u}", f"i{i}", int(t), "watch", 60.0)
        for u in range(n_users)
        for i, t in zip(rng.choice(n_items, per_user, replace=False), rng.permutation(10_000)[:per_user])
    ]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "ts_ms", "event_type", "watch_seconds"])
    return label_positives(events, None, 0.0)


class Constant:
    def fit(self, train, n_users, n_items):
        self.n_items = n_items
        return self

    def score(self, user_idx, item_idx=None):
        return np.zeros((len(user_idx), self.n_items if item_idx is None else item_idx.shape[1]))


class Oracle:
    """Scores the test items of each user 1 and all else 0."""

    def __init__(self, truth: pd.DataFrame):
        self.truth = truth

    def fit(self, train, n_users, n_items):
        self.relevant = np.zeros((n_users, n_items))
        self.relevant[self.truth["user_idx"], self.truth["item_idx"]] = 1.0
        return self

    def score(self, user_idx, item_idx=None):
        full = self.relevant[user_idx]
        return full if item_idx is None else np.take_along_axis(full, item_idx, axis=1)


def test_loo_ties_rank_the_held_out_item_like_a_random_draw():
    split = split_loo(_random_events(), seed=1)
    result = evaluate_loo(Constant().fit(split.train, split.n_users, split.n_items), split)
    # All scores tie: the held-out item sits at a random one of 100 columns, so HR@10 ~ 0.10 (300 users: sd 0.017).
    assert 0.04 < result["hr@10"] < 0.18
    assert result["n_users"] == 300 and len(result["per_user"]) == 300


def test_loo_oracle_scores_one():
    split = split_loo(_random_events())
    truth = pd.DataFrame({"user_idx": split.test_users, "item_idx": split.test_items})
    result = evaluate_loo(Oracle(truth).fit(None, split.n_users, split.n_items), split)
    assert result["hr@10"] == 1.0 and result["ndcg@10"] == 1.0
    assert (result["per_user"]["n_train"] == 7).all()


def test_full_oracle_is_perfect_up_to_the_size_of_the_test_set():
    split = split_by_time(_random_events(), per_user=True)  # 8 positives a user: 6 train, 2 test
    result = evaluate_full(Oracle(split.test).fit(None, split.n_users, split.n_items), split)
    assert result["recall@10"] == result["ndcg@10"] == result["map@10"] == 1.0
    assert result["precision@10"] == pytest.approx(2 / 10)


def test_full_ranking_breaks_ties_by_one_catalog_order():
    # A constant model recommends the same items to everyone: each list is the first 10 items of one fixed order
    # that are not among the user's 6 train items, so all lists come from its first 16 items.
    split = split_by_time(_random_events(), per_user=True)
    result = evaluate_full(Constant().fit(None, split.n_users, split.n_items), split)
    assert 10 / 150 <= result["coverage@10"] <= 16 / 150


def test_full_ranking_never_recommends_train_items():
    split = split_by_time(_random_events(n_users=20, n_items=12, per_user=10), per_user=True)  # 7 train, 3 test
    result = evaluate_full(Oracle(split.train).fit(None, split.n_users, split.n_items), split, k=5)
    # Scoring train items highest must not help: they are masked, leaving the 5 unseen items (3 of them relevant).
    assert result["precision@5"] == pytest.approx(3 / 5)
    assert result["recall@5"] == 1.0


def test_bad_scores_are_reported():
    split = split_loo(_random_events(n_users=20), n_negatives=20)

    class Broken(Constant):
        def score(self, user_idx, item_idx=None):
            return np.full(item_idx.shape, np.nan)

    with pytest.raises(UserError, match="non-finite"):
        evaluate_loo(Broken().fit(None, split.n_users, split.n_items), split)
    with pytest.raises(UserError, match="candidates"):
        evaluate_loo(Constant().fit(None, split.n_users, split.n_items), split, k=22)
