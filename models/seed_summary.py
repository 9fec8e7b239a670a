"""One evaluation summary from the runs of several seeds: each metric's mean over seeds and its spread (the
standard deviation over seeds, 0 for one seed), and each model's paired difference in NDCG@k to the best
baseline (``models.paired_bootstrap``: users resampled within their seed, each seed weighing the same), overall
and per user-activity bucket.

A run is ``(summary, per_user)`` from ``models.evaluate``: ``per_user[(protocol, model)]`` holds one row per
evaluated user (``user_id``, ``n_train``, the metrics); every model of a protocol and seed has the same users.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd

from models.paired_bootstrap import by_group, paired_lift

ACTIVITY_BINS = (1, 5, 10, 20, 50, 100)  # train positives per user: bucket lower bounds
_EDGES = [*ACTIVITY_BINS, np.inf]
BUCKETS = [f"{lo}-{hi - 1}" if np.isfinite(hi) else f"{lo}+" for lo, hi in pairwise(_EDGES)]  # in activity order
OURS = ("wide-deep", "wide-deep-no-live")  # every other model is a baseline

Run = tuple[dict, dict[tuple[str, str], pd.DataFrame]]


def activity_bucket(n_train: pd.Series) -> pd.Series:
    """Each user's bucket of train positives (ACTIVITY_BINS) as a label of BUCKETS, e.g. "5-9" or "100+"."""
    return pd.cut(n_train, bins=_EDGES, right=False, labels=BUCKETS).astype(str)


def activity_table(per_user: pd.DataFrame, metric: str) -> dict[str, dict]:
    """Mean ``metric`` and user count per activity bucket (users of every seed pooled), in activity order, empty
    buckets left out."""
    grouped = per_user.groupby(activity_bucket(per_user["n_train"]))[metric]
    return _in_activity_order({bucket: {"users": int(g.size), metric: float(g.mean())} for bucket, g in grouped})


def _in_activity_order(by_bucket: dict[str, dict]) -> dict[str, dict]:
    return {bucket: by_bucket[bucket] for bucket in BUCKETS if bucket in by_bucket}


def combine(runs: Sequence[Run], seeds: Sequence[int]) -> dict:
    """The summary ``models.report`` writes, from one run per seed (same protocols and models in each)."""
    if len(runs) != len(seeds) or not runs:
        raise ValueError(f"{len(runs)} runs for seeds {list(seeds)}")
    first, _ = runs[0]
    summary = {key: value for key, value in first.items() if key not in ("protocols", "seconds", "seed")}
    summary["seeds"] = list(seeds)
    summary["seconds"] = {str(seed): run["seconds"] for seed, (run, _) in zip(seeds, runs)}
    summary["protocols"] = {p: _protocol(p, runs, seeds) for p in first["protocols"]}
    return summary


def _protocol(protocol: str, runs: Sequence[Run], seeds: Sequence[int]) -> dict:
    block = runs[0][0]["protocols"][protocol]
    k, names = block["k"], list(block["models"])
    headline = f"ndcg@{k}"
    per_seed = {str(seed): run["protocols"][protocol]["models"] for seed, (run, _) in zip(seeds, runs)}
    models, spread = {}, {}
    for name in names:
        figures = [seed_figures[name] for seed_figures in per_seed.values()]
        metrics = [m for m, v in figures[0].items() if isinstance(v, float)]
        models[name] = {**figures[0], **{m: float(np.mean([f[m] for f in figures])) for m in metrics}}
        spread[name] = {m: float(np.std([f[m] for f in figures], ddof=1)) if len(figures) > 1 else 0.0
                        for m in metrics}
    pooled = {name: pd.concat([per_user[protocol, name].assign(seed=seed) for seed, (_, per_user) in
                               zip(seeds, runs)], ignore_index=True) for name in names}
    baselines = [n for n in names if n not in OURS]
    best = max(baselines, key=lambda n: models[n][headline]) if baselines else None
    out = {
        "description": block["description"], "k": k, "split": block["split"],
        "models": models, "spread": spread, "per_seed": per_seed,
        f"{headline}_by_activity": {name: activity_table(pooled[name], headline) for name in names},
    }
    if best is not None:
        out["best_baseline"] = best
        out["vs_best_baseline"], out["vs_best_baseline_by_activity"] = {}, {}
        for name in names:
            if name == best:
                continue
            pair = pooled[best][["seed", "user_id", "n_train", headline]].merge(
                pooled[name][["seed", "user_id", headline]], on=["seed", "user_id"], suffixes=("_base", "_model"))
            if len(pair) != len(pooled[best]):
                raise ValueError(f"{protocol}: {name} and {best} were not evaluated on the same users")
            base, model, strata = pair[f"{headline}_base"], pair[f"{headline}_model"], pair["seed"]
            out["vs_best_baseline"][name] = paired_lift(base, model, strata)
            if name in OURS:
                out["vs_best_baseline_by_activity"][name] = _in_activity_order(
                    by_group(base, model, activity_bucket(pair["n_train"]), strata))
    return out
