"""Matrix factorisation trained with BPR (Rendle et al. 2009): a user should score a train positive above an item
they do not have. Score = <user factors, item factors> + item bias.

Vectorised mini-batch SGD in numpy: each step draws a batch of train positives (u, i) and one uniform negative j per
positive (redrawn while it is also a positive of u), and applies the per-triple gradients summed by index, so a
batch acts like that many plain SGD steps. One epoch draws as many triples as there are train positives.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from models.baselines.recommender import candidates, check_fitted
from models.data import UserItems
from streamrec.errors import UserError

# Initial factor scale: from much smaller factors (0.0125 was tried) SGD idles for many epochs where every score is ~0.
_INIT_STD = 0.1
_NEGATIVE_REDRAWS = 10  # a user owning most of the catalogue can exhaust these; such a triple is dropped


class BPR:
    def __init__(
        self,
        factors: int = 64,
        epochs: int = 50,
        lr: float = 0.02,
        reg: float = 0.03,
        batch_size: int = 1024,
        seed: int = 0,
        progress: bool = True,
    ):
        if factors < 1 or epochs < 1 or batch_size < 1 or lr <= 0 or reg < 0:
            raise UserError("BPR needs factors, epochs, batch_size >= 1, lr > 0 and reg >= 0")
        self.factors, self.epochs, self.lr, self.reg = factors, epochs, lr, reg
        self.batch_size, self.seed, self.progress = batch_size, seed, progress
        self.user_f: np.ndarray | None = None
        self.item_f: np.ndarray | None = None
        self.item_b: np.ndarray | None = None
        self.losses: list[float] = []  # mean BPR log-loss per epoch, to see convergence

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> BPR:
        if n_items < 2:
            raise UserError("BPR needs at least 2 items to compare")
        rng = np.random.default_rng(self.seed)
        users = train["user_idx"].to_numpy(np.int64)
        items = train["item_idx"].to_numpy(np.int64)
        positives = UserItems.from_pairs(users, items, n_users, n_items)
        self.user_f = rng.normal(0, _INIT_STD, (n_users, self.factors)).astype(np.float32)
        self.item_f = rng.normal(0, _INIT_STD, (n_items, self.factors)).astype(np.float32)
        self.item_b = np.zeros(n_items, dtype=np.float32)
        self.losses = []
        bar = tqdm(range(self.epochs), desc="BPR", unit="epoch", disable=not self.progress)
        for _ in bar:
            order = rng.permutation(len(users))
            total = 0.0
            for lo in range(0, len(order), self.batch_size):
                batch = order[lo : lo + self.batch_size]
                total += self._step(users[batch], items[batch], positives, rng)
            self.losses.append(total / len(users))
            bar.set_postfix(loss=f"{self.losses[-1]:.4f}")
        return self

    def _step(self, u: np.ndarray, i: np.ndarray, positives: UserItems, rng: np.random.Generator) -> float:
        # fit() sets the factors before its first step
        assert self.user_f is not None and self.item_f is not None and self.item_b is not None
        j = rng.integers(0, len(self.item_b), len(u))
        clash = np.flatnonzero(positives.contains(u, j))
        for _ in range(_NEGATIVE_REDRAWS):
            if not clash.size:
                break
            j[clash] = rng.integers(0, len(self.item_b), clash.size)
            clash = clash[positives.contains(u[clash], j[clash])]
        keep = np.ones(len(u), dtype=bool)
        keep[clash] = False
        u, i, j = u[keep], i[keep], j[keep]
        pu, qi, qj = self.user_f[u], self.item_f[i], self.item_f[j]
        x = np.einsum("bf,bf->b", pu, qi - qj) + self.item_b[i] - self.item_b[j]
        g = 1.0 / (1.0 + np.exp(x))  # d log sigmoid(x) / dx = sigmoid(-x)
        lr, reg, gu = self.lr, self.reg, g[:, None]
        _scatter_add(self.user_f, u, lr * (gu * (qi - qj) - reg * pu))
        _scatter_add(self.item_f, np.concatenate([i, j]), lr * np.vstack([gu * pu - reg * qi, -gu * pu - reg * qj]))
        np.add.at(self.item_b, i, lr * (g - reg * self.item_b[i]))
        np.add.at(self.item_b, j, lr * (-g - reg * self.item_b[j]))
        return float(np.logaddexp(0.0, -x).sum())

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        check_fitted(self, "user_f")
        assert self.user_f is not None and self.item_f is not None and self.item_b is not None  # set together by fit()
        pu = self.user_f[np.asarray(user_idx)]
        if item_idx is None:
            return pu @ self.item_f.T + self.item_b
        item_idx = candidates(item_idx, len(pu))
        return np.einsum("bf,bcf->bc", pu, self.item_f[item_idx]) + self.item_b[item_idx]


def _scatter_add(matrix: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``matrix[rows] += values`` with repeated rows summed; through the flat view, where np.add.at is several
    times faster than on 2-D rows."""
    width = matrix.shape[1]
    np.add.at(matrix.reshape(-1), (rows[:, None] * width + np.arange(width)).ravel(), values.ravel())
