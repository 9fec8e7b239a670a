"""The lift of the re-rank over Wide & Deep alone, with its uncertainty (pure numpy).

Both orders of a session are judged against the same relevant items (``models.metrics``: binary relevance,
NDCG normalised by the session's relevant items in all, so an item neither list holds still counts against
both). The lift is paired: every bootstrap replicate resamples sessions and keeps both orders of a session
together. With several world seeds the sessions are resampled within their seed (strata) and each seed weighs
the same, so the CI is that of the mean over seeds, the figure the report leads with.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.metrics import hr_at_k, ndcg_at_k
from streamrec.errors import UserError

K = 10
BOOTSTRAP = 2000
CONFIDENCE = 0.95


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


def paired_lift(base: np.ndarray, treated: np.ndarray, strata: np.ndarray | None = None, *,
                n_boot: int = BOOTSTRAP, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """Mean of each order, their difference and relative lift, each difference with a percentile bootstrap CI.

    ``strata`` (one label per session, e.g. the world seed): the means are means over strata of the stratum
    means, and replicates resample within each stratum. Same inputs and ``seed``, same CI.
    """
    base, treated = np.asarray(base, float), np.asarray(treated, float)
    if base.shape != treated.shape or base.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of one length, got {base.shape} and {treated.shape}")
    if base.size == 0:
        raise UserError("no session to compute a lift on")
    if not 0 < confidence < 1:
        raise UserError(f"confidence must be between 0 and 1, got {confidence}")
    strata = np.zeros(base.size, dtype=int) if strata is None else np.asarray(strata)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    rng = np.random.default_rng(seed)
    # Each replicate's mean per stratum, then the mean over strata: shape (n_boot,).
    boot_base, boot_treated = np.zeros(n_boot), np.zeros(n_boot)
    for idx in groups:
        draw = idx[rng.integers(0, idx.size, size=(n_boot, idx.size))]
        boot_base += base[draw].mean(axis=1) / len(groups)
        boot_treated += treated[draw].mean(axis=1) / len(groups)
    mean_base = float(np.mean([base[idx].mean() for idx in groups]))
    mean_treated = float(np.mean([treated[idx].mean() for idx in groups]))
    tail = (1 - confidence) / 2 * 100
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero baseline has no relative lift: NaN, said below
        relative = boot_treated / boot_base - 1
    diff_ci = _interval(boot_treated - boot_base, tail)
    return {
        "sessions": int(base.size),
        "base": mean_base,
        "treated": mean_treated,
        "diff": mean_treated - mean_base,
        "diff_ci": diff_ci,
        "relative": mean_treated / mean_base - 1 if mean_base > 0 else None,
        "relative_ci": _interval(relative, tail) if np.isfinite(relative).all() else None,
        "ci_excludes_zero": diff_ci[0] > 0 or diff_ci[1] < 0,
    }


def by_group(base: np.ndarray, treated: np.ndarray, labels: Sequence[str], strata: np.ndarray | None = None, *,
             n_boot: int = BOOTSTRAP, seed: int = 0) -> dict[str, dict]:
    """``paired_lift`` per label (e.g. context type), largest groups first; within a group, strata that have
    no session of it simply do not take part."""
    labels = np.asarray(labels, dtype=object)
    strata = np.zeros(len(labels), dtype=int) if strata is None else np.asarray(strata)
    names, sizes = np.unique(labels, return_counts=True)
    out = {}
    for name in names[np.lexsort((names, -sizes))]:
        mask = labels == name
        out[str(name)] = paired_lift(np.asarray(base)[mask], np.asarray(treated)[mask], strata[mask],
                                     n_boot=n_boot, seed=seed)
    return out


def latency_summary(latencies_ms: Sequence[float]) -> dict:
    """p50, p95 and max of the decision latencies (ms), and how many there were; None values when none."""
    values = np.asarray(latencies_ms, dtype=float)
    if values.size == 0:
        return {"calls": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"calls": int(values.size), "p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1),
            "max_ms": round(float(values.max()), 1)}


def _interval(values: np.ndarray, tail: float) -> list[float]:
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]
