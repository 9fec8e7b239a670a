"""What every recommender offers the evaluation protocols."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from streamrec.errors import UserError


@runtime_checkable
class Recommender(Protocol):
    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> Recommender:
        """Learn from positives ``train`` (columns user_idx, item_idx; ts_ms may be there too)."""
        ...

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        """Higher is better. ``user_idx`` (B,); ``item_idx`` None scores every item -> (B, n_items), or (B, C)
        candidates per user -> (B, C)."""
        ...


def pick(full: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
    """Full (B, n_items) scores, narrowed to per-user candidates when ``item_idx`` is given."""
    if item_idx is None:
        return full
    return np.take_along_axis(full, candidates(item_idx, full.shape[0]), axis=1)


def candidates(item_idx: np.ndarray, n_users: int) -> np.ndarray:
    """``item_idx`` checked to be one row of candidates per scored user."""
    item_idx = np.asarray(item_idx)
    if item_idx.ndim != 2 or item_idx.shape[0] != n_users:
        raise ValueError(f"item_idx must be (n_users={n_users}, n_candidates), got shape {item_idx.shape}")
    return item_idx


def sequences(train: pd.DataFrame, n_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``train``'s user codes, item codes and each user's row end (exclusive), refusing rows not grouped by user:
    a sequential model reads a user's sequence as the order of their rows (the splits' tie-rule order)."""
    users = train["user_idx"].to_numpy(np.int64)
    if len(users) and np.any(np.diff(users) < 0):
        raise UserError("train must be grouped by user (rows sorted by user, then time)")
    return users, train["item_idx"].to_numpy(np.int64), np.cumsum(np.bincount(users, minlength=n_users))


def check_fitted(model: object, attr: str) -> None:
    if getattr(model, attr) is None:
        raise RuntimeError(f"{type(model).__name__} is not fitted: call fit() first")
