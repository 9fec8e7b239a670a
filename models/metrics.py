"""Top-k ranking metrics, one value per user (pure numpy).

Each metric reads ``hits``, a boolean (n_users, L) matrix with L >= k: ``hits[u, r]`` is true when the item ranked
at position r (0-based) for user u is relevant. Metrics that normalise by the user's relevant items also take
``n_relevant``: how many relevant items each user has in all, not only in the list. A user with none has no defined
recall/NDCG/AP, so that is an error rather than a zero. Relevance is binary; positions are discounted by log2(r + 2).
"""
from __future__ import annotations

import numpy as np

from streamrec.errors import UserError


def hit_matrix(ranked: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """``ranked`` (n_users, L) item indices, -1 for an empty slot; ``relevant`` (n_users, n_items) bool -> hits."""
    ranked = np.asarray(ranked)
    filled = ranked >= 0
    hits = np.take_along_axis(np.asarray(relevant, bool), np.where(filled, ranked, 0), axis=1)
    return hits & filled


def hr_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """1 when any of the top k is relevant, else 0."""
    return _top(hits, k).any(axis=1).astype(float)


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Relevant items in the top k, over k."""
    return _top(hits, k).sum(axis=1) / k


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Relevant items in the top k, over all of the user's relevant items."""
    top, n = _top(hits, k), _n_relevant(hits, n_relevant)
    return top.sum(axis=1) / n


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """DCG of the top k over the DCG of a perfect list, which has min(n_relevant, k) hits on top."""
    top, n = _top(hits, k), _n_relevant(hits, n_relevant)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n, k) - 1]
    return (top @ discounts) / ideal


def average_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Mean of precision@r over the ranks r <= k that hold a relevant item, normalised by min(n_relevant, k) so a
    perfect list scores 1 (MAP@k is the mean over users)."""
    top, n = _top(hits, k), _n_relevant(hits, n_relevant)
    precision_at_r = np.cumsum(top, axis=1) / np.arange(1, k + 1)
    return (precision_at_r * top).sum(axis=1) / np.minimum(n, k)


def catalog_coverage(ranked: np.ndarray, n_items: int) -> float:
    """Share of the catalog's ``n_items`` that appear in at least one user's list (-1 slots ignored)."""
    if n_items < 1:
        raise UserError("catalog coverage needs a catalog with at least one item")
    ranked = np.asarray(ranked)
    shown = np.unique(ranked[ranked >= 0])
    if shown.size and shown[-1] >= n_items:
        raise ValueError(f"item index {shown[-1]} is outside a catalog of {n_items}")
    return shown.size / n_items


def _top(hits: np.ndarray, k: int) -> np.ndarray:
    hits = np.asarray(hits)
    if hits.dtype != bool or hits.ndim != 2:
        raise ValueError(f"hits must be a 2-D boolean matrix, got {hits.dtype} with shape {hits.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UserError(f"k must be a positive integer, got {k!r}")
    if hits.shape[1] < k:
        raise ValueError(f"ranked lists have {hits.shape[1]} positions, fewer than k={k}")
    if hits.shape[0] == 0:
        raise UserError("no user to evaluate")
    return hits[:, :k]


def _n_relevant(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    n = np.asarray(n_relevant)
    if n.shape != (hits.shape[0],):
        raise ValueError(f"n_relevant must have one count per user ({hits.shape[0]}), got shape {n.shape}")
    if (n < 1).any():
        raise UserError(f"{int((n < 1).sum())} user(s) have no relevant item; leave them out of the evaluation")
    if (hits.sum(axis=1) > n).any():
        raise ValueError("a user has more hits than relevant items")
    return n.astype(np.int64)
