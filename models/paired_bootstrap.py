"""A paired difference between two systems judged on the same units (users, sessions), with a percentile
bootstrap CI (pure numpy).

Every replicate resamples units and keeps both systems' values of a unit together. With strata (e.g. seeds) the
units are resampled within their stratum and each stratum weighs the same, so the CI is that of the mean over
strata, the figure a report leads with.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.errors import UserError

BOOTSTRAP = 2000
CONFIDENCE = 0.95


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
    label_arr = np.asarray(labels, dtype=object)
    strata = np.zeros(len(label_arr), dtype=int) if strata is None else np.asarray(strata)
    names, sizes = np.unique(label_arr, return_counts=True)
    out = {}
    for name in names[np.lexsort((names, -sizes))]:
        mask = label_arr == name
        out[str(name)] = paired_lift(np.asarray(base)[mask], np.asarray(treated)[mask], strata[mask],
                                     n_boot=n_boot, seed=seed)
    return out


def _interval(values: np.ndarray, tail: float) -> list[float]:
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]
