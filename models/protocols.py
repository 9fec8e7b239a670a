"""Run a recommender under a split's protocol and collect ranking metrics, overall and per user.

Each evaluation returns a dict: the mean metrics (``hr@10``, ``ndcg@10``, ...), ``n_users`` evaluated, ``skipped``
(users left out, by reason, from the split) and ``per_user``: a DataFrame with one row per evaluated user, including
``n_train`` (their train positives) so a report can bucket a metric by user activity.

Ties in score never favour the truth: leave-last-out candidates hold the held-out item at a random column and keep
that order among equal scores; full ranking breaks ties by one seeded random order of the catalog.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from models.baselines.recommender import Recommender
from models.data import FullSplit, LooSplit, UserItems
from models.metrics import (
    average_precision_at_k,
    catalog_coverage,
    hit_matrix,
    hr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from streamrec.errors import UserError


def run(model: Recommender, split: LooSplit | FullSplit, k: int = 10) -> dict:
    """Fit ``model`` on the split's train positives, then evaluate it under the split's protocol."""
    model.fit(split.train, split.n_users, split.n_items)
    return evaluate_loo(model, split, k) if isinstance(split, LooSplit) else evaluate_full(model, split, k)


def evaluate_loo(model: Recommender, split: LooSplit, k: int = 10, batch_size: int = 1024) -> dict:
    """HR@k and NDCG@k of the held-out item among its candidates."""
    n_candidates = split.candidates.shape[1]
    if k > n_candidates:
        raise UserError(f"k={k} is more than the {n_candidates} candidates per user: every list would hit")
    hit_batches: list[np.ndarray] = []
    for lo in range(0, len(split.test_users), batch_size):
        users, cands = split.test_users[lo : lo + batch_size], split.candidates[lo : lo + batch_size]
        scores = _checked(model, model.score(users, cands), cands.shape)
        ranked = np.take_along_axis(cands, np.argsort(-scores, axis=1, kind="stable")[:, :k], axis=1)
        hit_batches.append(ranked == split.test_items[lo : lo + batch_size, None])
    hits = np.vstack(hit_batches)
    per_user = pd.DataFrame(
        {
            "user_id": split.users.decode(split.test_users),
            "n_train": _train_counts(split)[split.test_users],
            f"hr@{k}": hr_at_k(hits, k),
            f"ndcg@{k}": ndcg_at_k(hits, np.ones(len(hits), np.int64), k),
        }
    )
    return _summary(per_user, k, split, extra={})


def evaluate_full(model: Recommender, split: FullSplit, k: int = 10, batch_size: int = 512, seed: int = 0) -> dict:
    """Precision, recall, NDCG and MAP at k over every item without a train positive of the user, plus the share
    of the catalog that reaches anyone's top k."""
    seen = UserItems.from_pairs(split.train["user_idx"], split.train["item_idx"], split.n_users, split.n_items)
    truth = UserItems.from_pairs(split.test["user_idx"], split.test["item_idx"], split.n_users, split.n_items)
    test_users = np.unique(split.test["user_idx"].to_numpy())
    tiebreak = np.random.default_rng(seed).permutation(split.n_items)
    hit_batches, lists = [], []
    for lo in range(0, len(test_users), batch_size):
        users = test_users[lo : lo + batch_size]
        scores = _checked(model, model.score(users, None), (len(users), split.n_items)).astype(np.float64)
        scores[seen.dense(users)] = -np.inf
        ranked = tiebreak[np.argsort(-scores[:, tiebreak], axis=1, kind="stable")[:, :k]]
        # A user with fewer than k unseen items gets empty (-1) slots, not their own train items.
        ranked[np.isneginf(np.take_along_axis(scores, ranked, axis=1))] = -1
        hit_batches.append(hit_matrix(ranked, truth.dense(users)))
        lists.append(ranked)
    hits, n_test = np.vstack(hit_batches), truth.counts()[test_users]
    per_user = pd.DataFrame(
        {
            "user_id": split.users.decode(test_users),
            "n_train": _train_counts(split)[test_users],
            "n_test": n_test,
            f"precision@{k}": precision_at_k(hits, k),
            f"recall@{k}": recall_at_k(hits, n_test, k),
            f"ndcg@{k}": ndcg_at_k(hits, n_test, k),
            f"map@{k}": average_precision_at_k(hits, n_test, k),
        }
    )
    return _summary(per_user, k, split, extra={f"coverage@{k}": catalog_coverage(np.vstack(lists), split.n_items)})


def _checked(model: Recommender, scores: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.shape != tuple(shape):
        raise ValueError(f"{type(model).__name__}.score returned shape {scores.shape}, expected {tuple(shape)}")
    if not np.isfinite(scores).all():
        raise UserError(f"{type(model).__name__} gave non-finite scores (did training diverge? try a lower lr)")
    return scores


def _train_counts(split: LooSplit | FullSplit) -> np.ndarray:
    return np.bincount(split.train["user_idx"].to_numpy(), minlength=split.n_users)


def _summary(per_user: pd.DataFrame, k: int, split: LooSplit | FullSplit, extra: dict) -> dict:
    means = {c: float(per_user[c].mean()) for c in per_user.columns if c.endswith(f"@{k}")}
    return {**means, **extra, "n_users": len(per_user), "skipped": dict(split.skipped), "per_user": per_user}
