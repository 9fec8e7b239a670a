"""Most popular: the same list for everyone, items ranked by how many users have them as train positives."""
from __future__ import annotations

import numpy as np
import pandas as pd

from models.baselines.recommender import check_fitted, pick


class MostPopular:
    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> MostPopular:
        self.counts = np.bincount(train["item_idx"].to_numpy(), minlength=n_items).astype(np.float32)
        return self

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        check_fitted(self, "counts")
        assert self.counts is not None
        full = np.broadcast_to(self.counts, (len(user_idx), len(self.counts)))
        return pick(full, item_idx).copy()
