"""Exponential time decay on event time.

A weight w added at event time t is worth w * 2^(-(T - t) / h) when read at a
later time T (h: half-life). A user's decayed sums are kept as their value at a
reference time R, the latest event time seen, so folding events e_1..e_n into
sums S (at R) gives, with R' = max(R, t_1, ..., t_n):

    S' = S * 2^(-(R' - R) / h) + sum_i delta_i * 2^(-(R' - t_i) / h)

Every exponent is <= 0: nothing is ever scaled up, so long-idle users cannot
overflow. A decayed sum is a plain sum of decayed terms, so the result does not
depend on the order events arrive in (up to float rounding); that is what lets
late events inside the watermark be folded in exactly, and lets one call fold a
whole micro-batch for many users at once.
"""
from __future__ import annotations

import math

import numpy as np


def decay_factor(elapsed_ms: float, half_life_ms: float) -> float:
    """2^(-elapsed / half-life); a negative elapsed time is an error, since reads never amplify."""
    if elapsed_ms < 0:
        raise ValueError(f"elapsed time must be >= 0, got {elapsed_ms} ms")
    if not half_life_ms > 0:
        raise ValueError(f"half-life must be > 0, got {half_life_ms} ms")
    return math.exp2(-elapsed_ms / half_life_ms)


def fold_decayed(
    sums: np.ndarray, ref_ms: np.ndarray, deltas: np.ndarray, ts_ms: np.ndarray, starts: np.ndarray, half_life_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """The formula above for U users at once.

    ``sums`` (U, K) at ``ref_ms`` (U,; -1 for a user with no events yet, whose sums are 0);
    ``deltas`` (n, K) at ``ts_ms`` (n,), grouped by user: user u's events are rows
    ``starts[u]:starts[u+1]`` (every user has at least one). Returns (new sums, new reference times).
    """
    if not half_life_ms > 0:
        raise ValueError(f"half-life must be > 0, got {half_life_ms} ms")
    ts = np.asarray(ts_ms, dtype=np.int64)
    new_ref = np.maximum(np.asarray(ref_ms, dtype=np.int64), np.maximum.reduceat(ts, starts))
    counts = np.diff(np.append(starts, len(ts)))
    age = np.repeat(new_ref, counts) - ts
    terms = deltas * np.exp2(-age / half_life_ms)[:, None]
    kept = np.where(ref_ms >= 0, np.exp2(-(new_ref - ref_ms) / half_life_ms), 0.0)
    return sums * kept[:, None] + np.add.reduceat(terms, starts, axis=0), new_ref
