"""The lift of the re-rank over Wide & Deep alone, with its uncertainty (pure numpy).

Both orders of a session are judged against the same relevant items (``models.metrics``: binary relevance,
NDCG normalised by the session's relevant items in all, so an item neither list holds still counts against
both). The lift is paired (``models.paired_bootstrap``): every bootstrap replicate resamples sessions and keeps
both orders of a session together, with the world seeds as strata.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.metrics import hr_at_k, ndcg_at_k
from streamrec.errors import UserError

K = 10


def session_metrics(orders: Sequence[Sequence[str]], relevant: Sequence[Sequence[str]], k: int = K) -> dict[str, np.ndarray]:
    """NDCG@k and HR@k per session of ranked item ids against each session's relevant ids.

    Lists shorter than k (fewer unseen items than k) are padded with misses."""
    if len(orders) != len(relevant):
        raise ValueError(f"{len(orders)} orders for {len(relevant)} sets of relevant items")
    if not orders:
        raise UserError("no session to evaluate")
    hits = np.zeros((len(orders), k), dtype=bool)
    for n, (order, rel) in enumerate(zip(orders, relevant)):
        wanted = set(rel)
        hits[n, : min(k, len(order))] = [item in wanted for item in list(order)[:k]]
    n_relevant = np.array([len(set(rel)) for rel in relevant], dtype=np.int64)
    return {f"ndcg@{k}": ndcg_at_k(hits, n_relevant, k), f"hr@{k}": hr_at_k(hits, k)}


def latency_summary(latencies_ms: Sequence[float]) -> dict:
    """p50, p95 and max of the decision latencies (ms), and how many there were; None values when none."""
    values = np.asarray(latencies_ms, dtype=float)
    if values.size == 0:
        return {"calls": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"calls": int(values.size), "p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1),
            "max_ms": round(float(values.max()), 1)}
