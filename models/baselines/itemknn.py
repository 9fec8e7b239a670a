"""Item-KNN: an item scores by its cosine similarity to the user's train items, counting only its top-k neighbours.

Dense numpy (scipy is not a dependency): a boolean user x item matrix and a float32 item x item matrix that holds
only each item's neighbours. That fits MovieLens-1M-sized data (3.7k items: 55 MB); ``MAX_DENSE_BYTES`` turns a
catalog too big for it into a clear error instead of an out-of-memory kill.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from models.baselines.recommender import check_fitted, pick
from models.data import UserItems
from streamrec.errors import UserError

MAX_DENSE_BYTES = 4 << 30
_BLOCK = 1024  # items per block while computing similarities: bounds the temporaries to n_items * _BLOCK floats


class ItemKNN:
    def __init__(self, neighbours: int = 100):
        if neighbours < 1:
            raise UserError(f"neighbours must be >= 1, got {neighbours}")
        self.neighbours = neighbours
        self.seen: UserItems | None = None
        self.sim: np.ndarray | None = None

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> ItemKNN:
        need = 4 * n_items * n_items + n_users * n_items
        if need > MAX_DENSE_BYTES:
            raise UserError(
                f"item-KNN keeps dense matrices: {n_users} users x {n_items} items needs {need / 2**30:.1f} GiB, "
                f"over the {MAX_DENSE_BYTES / 2**30:.0f} GiB limit"
            )
        self.seen = UserItems.from_pairs(train["user_idx"], train["item_idx"], n_users, n_items)
        x = self.seen.dense(np.arange(n_users)).astype(np.float32)
        norms = np.sqrt(x.sum(axis=0))
        norms[norms == 0] = 1.0  # an item nobody has co-occurs with nothing: its similarities stay 0
        sim = np.zeros((n_items, n_items), dtype=np.float32)
        keep = min(self.neighbours, n_items - 1)
        for lo in range(0, n_items, _BLOCK):
            cols = slice(lo, min(lo + _BLOCK, n_items))
            block = (x.T @ x[:, cols]) / np.outer(norms, norms[cols])
            block[np.arange(lo, cols.stop), np.arange(cols.stop - lo)] = 0.0  # an item is not its own neighbour
            if keep > 0:
                # column j of sim: the similarities of candidate j's top-k neighbours; everything else 0
                top = np.argpartition(-block, keep - 1, axis=0)[:keep]
                np.put_along_axis(sim[:, cols], top, np.take_along_axis(block, top, axis=0), axis=0)
        self.sim = sim
        return self

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        check_fitted(self, "sim")
        return pick(self.seen.dense(user_idx).astype(np.float32) @ self.sim, item_idx)
