"""Item-KNN: an item scores by its cosine similarity to the user's train items, counting only its top-k neighbours.

    sim(i, j) = |U_i ∩ U_j| / sqrt(|U_i| |U_j|)        (U_i: the users with a train positive on item i; sim(i, i) = 0)
    score(u, j) = sum over the user's train items i of sim(i, j), where i is one of j's ``neighbours`` most similar
                  items (``neighbours=None``: every item counts)

The co-occurrence counts come from a scipy.sparse product of the binary user x item matrix with itself; the item x
item similarities are kept dense in float32 (MovieLens-1M, 3.7k items: 55 MB), and ``MAX_DENSE_BYTES`` turns a
catalog too big for that into a clear error instead of an out-of-memory kill. Scoring multiplies the batch's train
rows, made dense, by that matrix.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.baselines.recommender import check_fitted, pick
from streamrec.errors import UserError

MAX_DENSE_BYTES = 4 << 30
_BLOCK = 1024  # candidate items per block while picking neighbours: bounds the temporaries to n_items * _BLOCK floats


def interactions(train: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """The binary float32 user x item matrix of train positives (a repeated pair counts once)."""
    users = train["user_idx"].to_numpy(np.int64)
    items = train["item_idx"].to_numpy(np.int64)
    x = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def cosine_similarities(x: sp.csr_matrix, neighbours: int | None = None) -> np.ndarray:
    """Dense float32 item x item cosine similarities of the binary user x item matrix ``x``, with a zero diagonal.
    With ``neighbours``, column j keeps only the similarities of j's ``neighbours`` most similar items (0 elsewhere).
    """
    n_items = x.shape[1]
    need = 4 * n_items * n_items
    if need > MAX_DENSE_BYTES:
        raise UserError(
            f"item similarities are kept dense: {n_items} items need {need / 2**30:.1f} GiB, over the "
            f"{MAX_DENSE_BYTES / 2**30:.0f} GiB limit"
        )
    norms = np.sqrt(np.asarray(x.sum(axis=0), dtype=np.float32).ravel())
    norms[norms == 0] = 1.0  # an item nobody has co-occurs with nothing: its similarities stay 0
    # Counts are small integers, exact in float32; the division is the same float32 one block by block.
    sim = (x.T @ x).toarray()
    keep = n_items - 1 if neighbours is None else min(neighbours, n_items - 1)
    for lo in range(0, n_items, _BLOCK):
        cols = slice(lo, min(lo + _BLOCK, n_items))
        block = sim[:, cols] / np.outer(norms, norms[cols])
        block[np.arange(lo, cols.stop), np.arange(cols.stop - lo)] = 0.0  # an item is not its own neighbour
        if 0 < keep < n_items - 1:  # keep = n_items - 1 keeps the whole column (the one left out is a 0)
            # column j: the similarities of candidate j's top-k neighbours; everything else 0
            top = np.argpartition(-block, keep - 1, axis=0)[:keep]
            kept = np.zeros_like(block)
            np.put_along_axis(kept, top, np.take_along_axis(block, top, axis=0), axis=0)
            block = kept
        sim[:, cols] = block
    return sim


class ItemKNN:
    def __init__(self, neighbours: int | None = 100):
        if neighbours is not None and (isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer))
                                       or neighbours < 1):
            raise UserError(f"neighbours must be an int >= 1 or None (all), got {neighbours!r}")
        self.neighbours = neighbours
        self.seen: sp.csr_matrix | None = None
        self.sim: np.ndarray | None = None

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> ItemKNN:
        self.seen = interactions(train, n_users, n_items)
        self.sim = cosine_similarities(self.seen, self.neighbours)
        return self

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        check_fitted(self, "sim")
        assert self.seen is not None and self.sim is not None  # set together by fit()
        # dense rows times dense sim: a BLAS product, several times faster here than scipy's sparse x dense one
        return pick(self.seen[np.asarray(user_idx)].toarray() @ self.sim, item_idx)
