"""Maximal marginal relevance over item genre vectors (pure).

MMR (Carbonell & Goldstein, 1998) picks items one at a time, each maximizing
``λ · relevance - (1 - λ) · (its highest similarity to an item already picked)``,
so a list does not fill up with near-copies of its best item. Relevance is min-max
scaled over the candidates first, so it shares the 0..1 range of the cosine
similarity of non-negative genre vectors and λ means the same whatever the model's
score scale. λ = 1 keeps the relevance order; smaller λ trades relevance for variety.
The pipeline passes the candidate generator's genre vectors (``models.retrieval.sources.genre_vectors``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mmr(relevance: Sequence[float] | np.ndarray, vectors: np.ndarray, lam: float, n: int) -> list[int]:
    """Indices of up to ``n`` items in pick order; on equal scores the earlier index wins.

    ``vectors`` are unit-length (or zero) rows, one per item, so a dot product is the cosine.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    vectors = np.asarray(vectors, dtype=np.float64)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"MMR lambda must be in [0, 1], got {lam}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if rel.ndim != 1 or vectors.ndim != 2 or vectors.shape[0] != rel.shape[0]:
        raise ValueError(f"need one vector per relevance score, got {rel.shape} scores and {vectors.shape} vectors")
    if not np.isfinite(rel).all():
        raise ValueError("relevance scores must be finite")
    lo, hi = (rel.min(), rel.max()) if rel.size else (0.0, 0.0)
    scaled = (rel - lo) / (hi - lo) if hi > lo else np.zeros_like(rel)
    max_sim = np.zeros_like(rel)
    available = np.ones(rel.shape[0], dtype=bool)
    picked: list[int] = []
    for _ in range(min(n, rel.shape[0])):
        score = np.where(available, lam * scaled - (1.0 - lam) * max_sim, -np.inf)
        best = int(np.argmax(score))  # argmax takes the first of equal maxima
        picked.append(best)
        available[best] = False
        np.maximum(max_sim, vectors @ vectors[best], out=max_sim)
    return picked
