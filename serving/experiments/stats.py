"""The A/B report's statistics: per-variant figures with confidence intervals, the test of each variant against
the control, sample-ratio mismatch, and off-policy estimates from logged propensities.

Users are the unit of randomization, so they are the unit of analysis: a per-exposure metric is the ratio of
two per-user sums, ``R = Σ_u y_u / Σ_u n_u``, and its variance comes from the delta method over users
(Deng, Knoblich, Lu 2018, "Applying the Delta Method in Metric Analytics"),

    Var(R) ≈ (s²_y − 2 R s_yn + R² s²_n) / (N · n̄²),

with ``s`` the sample (co)variances of the per-user sums over the N users and ``n̄`` their mean exposures;
treating exposures as independent would understate it, since one user's lists are alike. Two variants are
compared by the z-test of ``R_b − R_a`` with ``Var(R_a) + Var(R_b)``.

Sample-ratio mismatch: a chi-square goodness-of-fit test of the users per variant against the configured
shares, flagged below p = 0.001 (a broken assignment or a logging loss, not chance).

Off-policy: the expected clicks per list of the greedy policy (every slot the ranked item) from lists logged by
an exploring one, with weights ``w = 1[not explored] / propensity``: IPS ``Σ w·r / lists`` (delta-method CI
like any ratio), and SNIPS, which divides each position's ``Σ w·r`` by its ``Σ w`` instead (lower variance,
a small bias), its CI by resampling users.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))
ALPHA = 0.05
SRM_ALPHA = 0.001
BOOTSTRAP = 2000


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    @classmethod
    def normal(cls, value: float, variance: float) -> Estimate:
        half = Z95 * float(np.sqrt(max(variance, 0.0)))
        return cls(value, value - half, value + half)


@dataclass(frozen=True)
class Comparison:
    diff: Estimate  # variant − control
    relative: float  # diff / control (nan when the control's is 0)
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def ratio(y: Sequence[float], n: Sequence[float]) -> tuple[float, float]:
    """``Σy / Σn`` over users and its delta-method variance."""
    y_, n_ = np.asarray(y, np.float64), np.asarray(n, np.float64)
    users = len(y_)
    if users == 0 or n_.sum() == 0:
        return float("nan"), float("nan")
    r = y_.sum() / n_.sum()
    if users < 2:
        return float(r), float("inf")
    cov = np.cov(y_, n_)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (users * n_.mean() ** 2)
    return float(r), float(var)


def ratio_estimate(y: Sequence[float], n: Sequence[float]) -> Estimate:
    return Estimate.normal(*ratio(y, n))


def compare(control: tuple[Sequence[float], Sequence[float]], variant: tuple[Sequence[float], Sequence[float]]
            ) -> Comparison:
    """The variant's ratio metric against the control's: difference, its CI, and the two-sided p-value."""
    (ra, va), (rb, vb) = ratio(*control), ratio(*variant)
    diff, var = rb - ra, va + vb
    se = float(np.sqrt(var)) if np.isfinite(var) else float("inf")
    p = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else (0.0 if diff else 1.0)
    return Comparison(Estimate.normal(diff, var), diff / ra if ra else float("nan"), p)


def sample_ratio_mismatch(users: Mapping[str, int], shares: Mapping[str, float]) -> float:
    """The p-value of the users per variant under the configured shares (chi-square goodness of fit)."""
    names = list(shares)
    observed = np.array([users.get(n, 0) for n in names], np.float64)
    expected = observed.sum() * np.array([shares[n] for n in names])
    if observed.sum() == 0:
        return 1.0
    return float(stats.chisquare(observed, expected).pvalue)


def snips(gain: np.ndarray, weight: np.ndarray, rng: np.random.Generator | None = None) -> Estimate:
    """``Σ_positions Σ_u gain[u, p] / Σ_u weight[u, p]`` (per-user sums of w·r and of w by position, shape
    users × positions), with a 95 % percentile CI over ``BOOTSTRAP`` resamples of users (as multinomial counts,
    in chunks: the memory stays at a chunk's counts × users)."""
    def value(g: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.where(w > 0, g / np.where(w > 0, w, 1.0), 0.0).sum(axis=-1)

    rng = rng or np.random.default_rng(0)
    users = len(gain)
    resampled = []
    for start in range(0, BOOTSTRAP, 100):
        counts = rng.multinomial(users, np.full(users, 1.0 / users), size=min(100, BOOTSTRAP - start))
        resampled.append(value(counts @ gain, counts @ weight))
    low, high = np.percentile(np.concatenate(resampled), [2.5, 97.5])
    return Estimate(float(value(gain.sum(axis=0), weight.sum(axis=0))), float(low), float(high))
