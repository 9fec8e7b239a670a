"""The fairness audit's figures (pure numpy/scipy): quality per user group, exposure per item group, disparity
ratios with bootstrap CIs, and a re-rank for exposure parity.

User groups: each evaluated user has one label per attribute (activity bucket, gender, age, ...). For a metric m
(NDCG@10, HR@10 per user) a group's quality is its users' mean m_g; the disparity is ``min_g m_g / max_g m_g``
(worst over best, 1 = parity) and each group's ratio to all users is ``m_g / m``. CIs resample users within their
group (a stratified percentile bootstrap, ``scipy.stats.bootstrap``), so every replicate keeps each group's size. The
disparity's CI is that of the ratio of the two groups the data name worst and best (the pair is chosen once, not
per replicate: a per-replicate min/max is biased low and its CI could never reach parity).
Groups of fewer than ``min_users`` users are listed but left out of ratios: their means are noise.

Item groups: popularity deciles by train positives (``popularity_groups``: items ranked by count, ties by index;
group 0 the least popular tenth of the catalog). A group's exposure share is its share of the slots of every
user's top-k list; ``exposure / catalog share`` is 1 when a group is shown as often as its size would have it, and the
exposure disparity is ``min_g / max_g`` of that ratio. Its distance from parity, ``1/2 sum_g |exposure_g -
catalog_g|`` (total variation: the share of slots that would have to move; 0 = parity), stays informative when
some group is never shown and the ratio is 0. CIs resample users (their lists) with replacement.

The re-rank (``ExposureRerank``): per user, the base scores over the whole catalog become rank percentiles
``p = rank / n_items`` (1 = the user's best item; ties share their mean rank), and each item gains
``strength * w_g`` of its popularity group g of G, ``w_g = (G - 1 - g) / (G - 1)``: the most popular decile gains
nothing, the least popular moves up ``strength * n_items`` places, whatever the model's score scale (too strong a
boost overshoots: the tail then crowds out the head, which the distance from parity shows). Any candidate set
reads its scores from that one transformed row, so leave-last-out and full ranking see the same re-rank.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, bootstrap, rankdata

from models.baselines.recommender import Recommender, pick

BOOTSTRAP = 2000
CONFIDENCE = 0.95
MIN_USERS = 20  # a group smaller than this is reported, not compared: its mean is mostly noise
N_POPULARITY_GROUPS = 10


def _ci(data: tuple[np.ndarray, ...], statistic: Callable, *, paired: bool, n_boot: int,
        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of each value ``statistic`` returns (``scipy.stats.bootstrap``, vectorised). A ratio
    whose denominator is 0 in some replicate has no finite CI: it comes back NaN (reported as none), and scipy's
    warning about it (worded for BCa) is not repeated."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(data, statistic, paired=paired, vectorized=True, method="percentile",
                           n_resamples=n_boot, confidence_level=CONFIDENCE, rng=seed, batch=250)
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


# ---------------------------------------------------------------- user groups


def group_quality(values: np.ndarray, labels: Sequence[str], *, order: Sequence[str] = (),
                  min_users: int = MIN_USERS, n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """One metric's per-user ``values`` by group ``labels``: per group its users, mean and CI, ratio to all
    users and CI; the disparity (worst/best group mean) with its CI and the groups it compares. Groups come in
    ``order`` (e.g. activity buckets), those it does not name after it, sorted."""
    values, label_of = np.asarray(values, float), np.asarray(labels, dtype=object).astype(str)
    if values.shape != label_of.shape or values.ndim != 1 or values.size == 0:
        raise ValueError(f"one label per value needed, got {values.shape} values and {label_of.shape} labels")
    present = set(label_of)
    names = [g for g in order if g in present] + sorted(present - set(order))
    compared = [g for g in names if (label_of == g).sum() >= min_users]
    overall = float(values.mean())
    groups: dict[str, dict] = {g: {"users": int((label_of == g).sum()), "mean": float(values[label_of == g].mean()),
                                   "mean_ci": None, "ratio_to_all": None, "ratio_to_all_ci": None}
                               for g in names}
    out: dict = {"overall": overall, "users": int(values.size), "groups": groups, "disparity": None}
    if len(compared) < 2:
        return out
    samples = tuple(values[label_of == g] for g in compared)
    sizes = np.array([s.size for s in samples], float)
    # The small groups' users count in "all users" as they are: too few to resample.
    rest = ~np.isin(label_of, compared)
    rest_sum, n = float(values[rest].sum()), len(compared)

    means = np.array([x.mean() for x in samples])
    worst, best = int(np.argmin(means)), int(np.argmax(means))

    def statistic(*xs, axis=-1):
        means = np.stack([x.mean(axis=axis) for x in xs])
        whole = (np.tensordot(sizes, means, axes=1) + rest_sum) / values.size
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero mean gives inf/NaN: the CI says so
            return np.concatenate([means, means / whole, (means[worst] / means[best])[None]])

    point = statistic(*samples)
    low, high = _ci(samples, statistic, paired=False, n_boot=n_boot, seed=seed)
    for j, g in enumerate(compared):
        groups[g] |= {"mean_ci": _pair(low[j], high[j]), "ratio_to_all": _float(point[n + j]),
                      "ratio_to_all_ci": _pair(low[n + j], high[n + j])}
    out["disparity"] = {"ratio": _float(point[-1]), "ci": _pair(low[-1], high[-1]),
                        "worst": compared[worst], "best": compared[best]}
    return out


# ---------------------------------------------------------------- item groups


def popularity_groups(train_counts: np.ndarray, n_groups: int = N_POPULARITY_GROUPS) -> np.ndarray:
    """Each item's popularity group 0..n_groups-1 (0 least popular): items ranked by train count (ties by index),
    the rank r of n items in group ``floor(r * n_groups / n)``, so the groups differ in size by at most one."""
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or counts.size < n_groups:
        raise ValueError(f"{counts.size} items cannot make {n_groups} popularity groups")
    ranks = np.empty(counts.size, np.int64)
    ranks[np.argsort(counts, kind="stable")] = np.arange(counts.size)
    return ranks * n_groups // counts.size


def group_labels(n_groups: int = N_POPULARITY_GROUPS) -> list[str]:
    """Group 0 is "D1" (the least popular tenth when there are ten)."""
    return [f"D{g + 1}" for g in range(n_groups)]


def top_k(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """Each row's k best items that are not ``seen`` (bool, same shape), ties by index; -1 pads a short list."""
    scores = np.where(seen, -np.inf, np.asarray(scores, float))
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.where(np.isneginf(np.take_along_axis(scores, ranked, axis=1)), -1, ranked)


def exposure_counts(ranked: np.ndarray, item_group: np.ndarray, n_groups: int) -> np.ndarray:
    """(users, n_groups): how many of each user's list slots hold an item of each group (-1 slots left out)."""
    ranked = np.asarray(ranked)
    rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
    filled = ranked.ravel() >= 0
    counts = np.zeros((ranked.shape[0], n_groups), np.int64)
    np.add.at(counts, (rows[filled], np.asarray(item_group)[ranked.ravel()[filled]]), 1)
    return counts


def exposure(counts: np.ndarray, item_group: np.ndarray, train_counts: np.ndarray, *,
             n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Per item group its share of catalog, train positives and list slots (with CI), exposure/catalog ratio
    (with CI); the disparity (min/max of that ratio) and the distance from parity, each with its CI. ``counts``
    from ``exposure_counts``."""
    counts = np.asarray(counts, float)
    n_groups = counts.shape[1]
    catalog = np.bincount(item_group, minlength=n_groups) / len(item_group)
    interactions = np.bincount(item_group, weights=train_counts, minlength=n_groups) / np.sum(train_counts)

    totals = counts.sum(axis=0)
    worst, best = int(np.argmin(totals / catalog)), int(np.argmax(totals / catalog))

    def statistic(*columns, axis=-1):
        totals = np.stack([c.sum(axis=axis) for c in columns])
        shares = totals / totals.sum(axis=0)
        ratios = shares / catalog.reshape((-1,) + (1,) * (shares.ndim - 1))
        distance = np.abs(shares - catalog.reshape(ratios.shape[:1] + (1,) * (shares.ndim - 1))).sum(axis=0) / 2
        return np.concatenate([shares, ratios, distance[None], (ratios[worst] / ratios[best])[None]])

    columns = tuple(counts.T)
    point = statistic(*columns)
    low, high = _ci(columns, statistic, paired=True, n_boot=n_boot, seed=seed)
    labels = group_labels(n_groups)
    groups = {labels[g]: {"catalog_share": float(catalog[g]), "interaction_share": float(interactions[g]),
                          "exposure_share": float(point[g]), "exposure_share_ci": _pair(low[g], high[g]),
                          "ratio": float(point[n_groups + g]),
                          "ratio_ci": _pair(low[n_groups + g], high[n_groups + g])}
              for g in range(n_groups)}
    return {"groups": groups, "slots": int(counts.sum()),
            "distance": {"value": float(point[-2]), "ci": _pair(low[-2], high[-2])},
            "disparity": {"ratio": float(point[-1]), "ci": _pair(low[-1], high[-1]),
                          "worst": labels[worst], "best": labels[best]}}


# ---------------------------------------------------------------- mitigation


def boost_weights(n_groups: int = N_POPULARITY_GROUPS) -> np.ndarray:
    """``w_g = (G - 1 - g) / (G - 1)``: 1 for the least popular group, 0 for the most popular."""
    return np.linspace(1.0, 0.0, n_groups)


class ExposureRerank:
    """A fitted recommender's scores re-ranked for exposure parity (the module docstring's formula). ``fit`` is
    the base model's: the audit fits it once and measures it with and without the re-rank."""

    def __init__(self, base: Recommender, item_group: np.ndarray, weights: np.ndarray, strength: float):
        if strength < 0:
            raise ValueError(f"the re-rank strength must be >= 0, got {strength}")
        self.base, self.strength = base, strength
        self.boost = strength * np.asarray(weights, float)[np.asarray(item_group)]

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> ExposureRerank:
        self.base.fit(train, n_users, n_items)
        return self

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        full = np.asarray(self.base.score(user_idx, None), float)
        percentile = rankdata(full, axis=1) / full.shape[1]
        return pick(percentile + self.boost, item_idx)


def _float(x) -> float | None:
    return float(x) if np.isfinite(x) else None


def _pair(lo, hi) -> list[float | None]:
    return [_float(lo), _float(hi)]
