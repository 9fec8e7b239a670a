"""Session item-KNN: item-KNN scored from the user's latest train items only, the simple session rule.

    score(u, j) = sum over the user's last ``last_n`` train items s_1 .. s_n (s_n the latest) of w_p sim(s_p, j)

with ``sim`` the cosine similarity of items over the whole train matrix, every neighbour counted (as
``ItemKNN(neighbours=None)``, zero diagonal), and a recency weight by position from the end,
``w_p = 1 / (1 + (n - p))``: 1 for the latest item, 1/2 for the one before, 1/3 ... (``recency=False``: every
weight 1). The harmonic weight was picked because the latest item should lead while the few before it still break
its ties; it is the common "recency-weighted last-N" variant of the session-based KNN rules (Ludewig & Jannach 2018,
"Evaluation of session-based recommendation algorithms").

A user's sequence is the order of their rows in ``train`` (the tie-rule order the splits produce): the rows are
never re-sorted here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.baselines.itemknn import cosine_similarities, interactions
from models.baselines.recommender import check_fitted, pick, sequences
from streamrec.errors import UserError


class SessionKNN:
    def __init__(self, last_n: int = 10, recency: bool = True):
        if isinstance(last_n, bool) or not isinstance(last_n, (int, np.integer)) or last_n < 1:
            raise UserError(f"last_n must be an int >= 1, got {last_n!r}")
        self.last_n, self.recency = int(last_n), recency
        self.recent: sp.csr_matrix | None = None  # user x item: the weight of each of the user's latest items
        self.sim: np.ndarray | None = None

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> SessionKNN:
        self.sim = cosine_similarities(interactions(train, n_users, n_items))
        users, items, ends = sequences(train, n_users)
        # position from the end of the user's sequence: 0 for their latest row
        back = ends[users] - 1 - np.arange(len(users))
        keep = back < self.last_n
        weights = 1.0 / (1.0 + back[keep]) if self.recency else np.ones(int(keep.sum()))
        # A repeated item (not expected in deduplicated positives) sums its weights.
        self.recent = sp.csr_matrix((weights.astype(np.float32), (users[keep], items[keep])), shape=(n_users, n_items))
        self.recent.sum_duplicates()
        return self

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        check_fitted(self, "sim")
        assert self.recent is not None and self.sim is not None  # set together by fit()
        return pick(self.recent[np.asarray(user_idx)].toarray() @ self.sim, item_idx)
