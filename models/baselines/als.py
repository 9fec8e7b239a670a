"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit Feedback Datasets"):
every user-item cell is fitted, a train positive towards 1 and every other cell towards 0, weighted by confidence

    minimise  sum over (u, i) of c_ui (p_ui - x_u . y_i)^2  +  regularization (sum |x_u|^2 + sum |y_i|^2)
    p_ui = 1 for a train positive, else 0;   c_ui = 1 + alpha r_ui, with r_ui = 1 for a positive, else 0

and solved by alternating least squares. Score = x_u . y_i.

Defaults (64 factors, 15 iterations, alpha 2, regularization 20) from a small grid on MovieLens-100k under both
protocols: implicit's regularization is not scaled by the number of a user's items, and its usual 0.01-0.05 left
64 factors overfitting there (leave-last-out NDCG@10 0.359 at alpha 10 / 0.05, 0.391 at alpha 2 / 20; full-ranking
NDCG@10 0.198 vs 0.227); alpha 1-10 mattered less than the regularization.

Through the ``implicit`` library (``implicit.cpu.als.AlternatingLeastSquares``, conjugate-gradient solver). That
library takes the matrix it is given as the confidence itself (c_ui = its ``alpha`` x the cell, unset cells 1), so
this module hands it 1 + alpha on each positive and leaves its own ``alpha`` at 1.

Deterministic: the factors start from ``seed`` and each row's solve is independent of the others and of how
implicit's OpenMP threads share them out, so the same seed gives the same factors bit for bit, with any
``num_threads``. BLAS is held to one thread while fitting (threadpoolctl), as implicit recommends; that also keeps
its "OpenBLAS is configured to use N threads" warning from firing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from models.baselines.itemknn import interactions
from models.baselines.recommender import candidates, check_fitted
from streamrec.errors import UserError


class ALS:
    def __init__(
        self,
        factors: int = 64,
        regularization: float = 20.0,
        alpha: float = 2.0,
        iterations: int = 15,
        seed: int = 0,
        num_threads: int = 0,
        progress: bool = True,
    ):
        if factors < 1 or iterations < 1 or regularization < 0 or alpha < 0 or num_threads < 0:
            raise UserError("ALS needs factors, iterations >= 1, regularization >= 0, alpha >= 0 and "
                            "num_threads >= 0 (0: every core)")
        self.factors, self.regularization, self.alpha, self.iterations = factors, regularization, alpha, iterations
        self.seed, self.num_threads, self.progress = seed, num_threads, progress
        self.user_f: np.ndarray | None = None
        self.item_f: np.ndarray | None = None

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> ALS:
        from implicit.cpu.als import (
            AlternatingLeastSquares,  # a heavy import, only for a model that is fitted
        )

        confidence = interactions(train, n_users, n_items) * np.float32(1.0 + self.alpha)
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=1.0, iterations=self.iterations,
                dtype=np.float32, num_threads=self.num_threads, random_state=self.seed,
            )
            model.fit(confidence, show_progress=self.progress)
        self.user_f = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_f = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        check_fitted(self, "user_f")
        assert self.user_f is not None and self.item_f is not None  # set together by fit()
        pu = self.user_f[np.asarray(user_idx)]
        if item_idx is None:
            return pu @ self.item_f.T
        return np.einsum("bf,bcf->bc", pu, self.item_f[candidates(item_idx, len(pu))])
