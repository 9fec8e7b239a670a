"""Several seeds' evaluations as one summary: means and spread over seeds, the best baseline picked by NDCG@10,
and the paired difference to it with a CI, overall and per activity bucket."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.seed_summary import BUCKETS, activity_bucket, activity_table, combine


def _run(seed: int, shift: dict[str, float]) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    users = [f"u{n}" for n in range(400)]
    n_train = rng.integers(1, 200, size=len(users))
    base = rng.uniform(0, 0.6, size=len(users))
    per_user, models = {}, {}
    for name, delta in shift.items():
        ndcg = np.clip(base + delta + rng.normal(0, 0.01, len(users)), 0, 1)
        per_user["loo", name] = pd.DataFrame({"user_id": users, "n_train": n_train, "ndcg@10": ndcg})
        models[name] = {"ndcg@10": float(ndcg.mean()), "n_users": len(users), "skipped": {}}
    summary = {"dataset": {"name": "t"}, "seed": seed, "protocols": {"loo": {
        "description": "d", "k": 10, "split": {"users": 400}, "models": models}}, "seconds": {"total": 1.0}}
    return summary, per_user


def test_means_spread_best_baseline_and_paired_difference():
    shift = {"most-popular": 0.0, "item-knn": 0.05, "wide-deep": 0.08}
    seeds = [0, 1, 2]
    runs = [_run(seed, shift) for seed in seeds]
    block = combine(runs, seeds)["protocols"]["loo"]

    each = [run["protocols"]["loo"]["models"]["item-knn"]["ndcg@10"] for run, _ in runs]
    assert block["models"]["item-knn"]["ndcg@10"] == pytest.approx(np.mean(each))
    assert block["spread"]["item-knn"]["ndcg@10"] == pytest.approx(np.std(each, ddof=1))
    assert block["best_baseline"] == "item-knn"  # wide-deep is ours, never the baseline
    versus = block["vs_best_baseline"]
    assert set(versus) == {"most-popular", "wide-deep"}
    low, high = versus["wide-deep"]["diff_ci"]
    assert low < 0.03 < high and low > 0  # the planted +0.03, and clearly above zero
    assert versus["most-popular"]["diff_ci"][1] < 0
    by_bucket = block["vs_best_baseline_by_activity"]["wide-deep"]
    assert sum(f["sessions"] for f in by_bucket.values()) == 3 * 400
    assert set(by_bucket) <= {"1-4", "5-9", "10-19", "20-49", "50-99", "100+"}
    assert list(by_bucket) == [b for b in BUCKETS if b in by_bucket]  # activity order, not group size


def test_one_seed_has_no_spread_and_other_users_are_refused():
    runs = [_run(0, {"bpr": 0.0, "wide-deep": 0.01})]
    block = combine(runs, [0])["protocols"]["loo"]
    assert block["spread"]["bpr"]["ndcg@10"] == 0.0
    summary, per_user = _run(1, {"bpr": 0.0, "wide-deep": 0.01})
    per_user["loo", "wide-deep"] = per_user["loo", "wide-deep"].iloc[1:]
    with pytest.raises(ValueError, match="same users"):
        combine([(summary, per_user)], [1])


def test_activity_buckets_are_labelled_and_ordered():
    assert activity_bucket(pd.Series([1, 4, 5, 99, 100, 3000])).tolist() == ["1-4", "1-4", "5-9", "50-99", "100+",
                                                                            "100+"]
    table = activity_table(pd.DataFrame({"n_train": [120, 2, 3, 7], "m": [1.0, 0.0, 0.5, 0.2]}), "m")
    assert list(table) == ["1-4", "5-9", "100+"]
    assert table["1-4"] == {"users": 2, "m": 0.25}
