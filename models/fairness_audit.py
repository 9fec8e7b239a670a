"""``streamrec evaluate --fairness``: one model (Wide & Deep by default) audited under leave-last-out.

The model is fitted once on the ``loo`` split's train positives (as ``models.evaluate`` does). Quality is each test
user's NDCG@10 and HR@10 of the held-out pick among 99 sampled items (``models.protocols.evaluate_loo``), by user
group: the train-activity bucket (``models.seed_summary``) and the attributes the data has (MovieLens: gender, age,
occupation; a generated world: each user's preferred device). Exposure is what each test user's top 10 over the
whole catalog (their train positives left out) shows of each popularity decile. The mitigation re-ranks the same
fitted model's scores for exposure parity at each strength (``models.fairness``) and measures both again; the
accuracy cost is the paired NDCG@10 difference with its CI (``models.paired_bootstrap``). Figures:
``models.fairness``; report: ``models.fairness_report``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from features.offline import read_event_log
from models import fairness
from models.baselines.recommender import Recommender
from models.data import LOG_ORDER, LooSplit, UserItems, label_positives, make_split
from models.evaluate import LOO_NEGATIVES, K, WideDeepRanker, baseline_models, context_rows, scratch_settings
from models.examples import event_frame
from models.paired_bootstrap import paired_lift
from models.protocols import evaluate_loo
from models.seed_summary import BUCKETS, activity_bucket
from models.train import EventLog, prepare
from models.wide_deep import WideDeepConfig
from streamrec.config import Settings
from streamrec.errors import UserError
from streamrec.vocabulary import DEVICES
from streams.movielens import AGE_GROUPS
from streams.world import load_world

log = logging.getLogger(__name__)

MITIGATIONS = ("exposure_rerank", "none")
WIDE_DEEP = ("wide-deep", "wide-deep-no-live")
METRICS = (f"ndcg@{K}", f"hr@{K}")
ACTIVITY = "activity"
GROUP_ORDER = {ACTIVITY: BUCKETS, "age": tuple(AGE_GROUPS.values())}  # groupings with a natural order


@dataclass(frozen=True)
class FairnessOptions:
    model: str = "wide-deep"
    mitigation: str = "exposure_rerank"
    strengths: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)
    seed: int = 0
    negatives: int = 4
    config: WideDeepConfig = field(default_factory=WideDeepConfig)
    n_boot: int = fairness.BOOTSTRAP
    min_users: int = fairness.MIN_USERS
    progress: bool = True


def world_user_attributes(world_dir: Path) -> pd.DataFrame:
    """A generated world's users by ``user_id`` with the device each prefers most (``users.jsonl``)."""
    world = load_world(world_dir)
    return pd.DataFrame({"user_id": list(world.user_ids),
                         "preferred_device": np.asarray(DEVICES)[world.device_pref.argmax(axis=1)]})


def _interactions(settings: Settings, event_log: EventLog, options: FairnessOptions):
    """The log's labelled interactions, and for Wide & Deep the prepared examples it trains on (None for a
    baseline, which needs no feature store)."""
    if options.model in WIDE_DEEP:
        prepared = prepare(scratch_settings(settings, event_log.name), event_log, negatives=options.negatives,
                           seed=options.seed)
        return prepared.interactions, prepared
    baselines = baseline_models(options.seed, options.progress)
    if options.model not in baselines:
        raise UserError(f"unknown model {options.model!r}; choose from {', '.join([*baselines, *WIDE_DEEP])}")
    events = event_frame(read_event_log(event_log.events))
    return label_positives(events[["user_id", "item_id", "ts_ms", "event_type", "watch_seconds", LOG_ORDER]],
                           None, 0.0), None


def user_groups(per_user: pd.DataFrame, attributes: pd.DataFrame | None) -> pd.DataFrame:
    """Per evaluated user (``per_user``'s order) a label per grouping: ``activity`` (train positives), then each
    attribute column. A user the attributes do not list is an error: the audit would silently drop them."""
    groups = pd.DataFrame({ACTIVITY: activity_bucket(per_user["n_train"]).to_numpy()})
    if attributes is None:
        return groups
    joined = per_user[["user_id"]].merge(attributes, on="user_id", how="left")
    columns = [c for c in attributes.columns if c != "user_id"]
    missing = joined[columns].isna().any(axis=1)
    if missing.any():
        raise UserError(f"{int(missing.sum())} evaluated user(s) have no attributes, e.g. "
                        f"{joined['user_id'][missing].iloc[0]}")
    return pd.concat([groups, joined[columns].astype(str).reset_index(drop=True)], axis=1)


def _full_lists(model, split: LooSplit, progress: bool, batch_size: int = 512) -> np.ndarray:
    """Each test user's top K over the catalog without their train positives (the held-out pick may be in it)."""
    seen = UserItems.from_pairs(split.train["user_idx"], split.train["item_idx"], split.n_users, split.n_items)
    lists = []
    for lo in tqdm(range(0, len(split.test_users), batch_size), desc="top-10 lists", unit="batch",
                   disable=not progress):
        users = split.test_users[lo:lo + batch_size]
        lists.append(fairness.top_k(model.score(users, None), seen.dense(users), K))
    return np.vstack(lists)


def _measure(model, split: LooSplit, groups: pd.DataFrame, item_group: np.ndarray, train_counts: np.ndarray,
             options: FairnessOptions) -> tuple[dict, pd.DataFrame]:
    """Quality by user group and exposure by item group of one (fitted) model; and its per-user rows."""
    per_user = evaluate_loo(model, split, K)["per_user"]
    counts = fairness.exposure_counts(_full_lists(model, split, options.progress), item_group,
                                      fairness.N_POPULARITY_GROUPS)
    quality = {metric: {"overall": float(per_user[metric].mean()),
                        "by": {name: fairness.group_quality(per_user[metric].to_numpy(), groups[name],
                                                            order=GROUP_ORDER.get(name, ()),
                                                            min_users=options.min_users,
                                                            n_boot=options.n_boot, seed=options.seed)
                               for name in groups.columns}}
               for metric in METRICS}
    return {"quality": quality, "exposure": fairness.exposure(counts, item_group, train_counts,
                                                              n_boot=options.n_boot, seed=options.seed)}, per_user


def audit(settings: Settings, event_log: EventLog, attributes: pd.DataFrame | None,
          options: FairnessOptions = FairnessOptions()) -> dict:
    """The audit's figures (``models.fairness_report`` writes them)."""
    if options.mitigation not in MITIGATIONS:
        raise UserError(f"unknown mitigation {options.mitigation!r}; choose from {', '.join(MITIGATIONS)}")
    if any(s <= 0 for s in options.strengths) or not options.strengths:
        raise UserError(f"re-rank strengths must be > 0, got {list(options.strengths)}")
    if options.min_users < 2:
        raise UserError(f"a compared group needs at least 2 users to resample, got --fairness-min-users "
                        f"{options.min_users}")
    started = time.monotonic()
    interactions, prepared = _interactions(settings, event_log, options)
    split = make_split(interactions, "loo", n_negatives=LOO_NEGATIVES, seed=options.seed)
    assert isinstance(split, LooSplit)  # "loo" makes one
    model: Recommender
    if prepared is not None:
        model = WideDeepRanker(prepared, split, context_rows(prepared, split), live=options.model == "wide-deep",
                               config=options.config, seed=options.seed, timezone=settings.features.timezone,
                               progress=options.progress)
    else:
        model = baseline_models(options.seed, options.progress)[options.model]
    seconds = {"prepare": round(time.monotonic() - started, 1)}
    log.info("fairness: fitting %s", options.model)
    model.fit(split.train, split.n_users, split.n_items)
    seconds["fit"] = round(time.monotonic() - started - seconds["prepare"], 1)

    train_counts = np.bincount(split.train["item_idx"], minlength=split.n_items)
    item_group = fairness.popularity_groups(train_counts)
    # The test users as evaluate_loo lists them: its per-user rows come in this order.
    tested = pd.DataFrame({"user_id": split.users.decode(split.test_users),
                           "n_train": np.bincount(split.train["user_idx"], minlength=split.n_users)[split.test_users]})
    groups = user_groups(tested, attributes)
    log.info("fairness: measuring %s", options.model)
    base, base_users = _measure(model, split, groups, item_group, train_counts, options)
    summary: dict = {
        "dataset": {"name": event_log.name, "events_path": str(event_log.events), "users": int(split.n_users),
                    "items": int(split.n_items), "train_positives": len(split.train)},
        "model": options.model, "seed": options.seed, "k": K, "bootstrap": options.n_boot,
        "confidence": fairness.CONFIDENCE, "min_group_users": options.min_users,
        "protocol": f"leave-last-out: each user's last positive among {LOO_NEGATIVES} sampled items the user never "
                    f"interacted with; exposure: each test user's top {K} over the catalog without their train "
                    "positives",
        "tested_users": len(base_users), "skipped": dict(split.skipped),
        "groupings": list(groups.columns), "base": base, "mitigation": {"name": options.mitigation, "runs": {}},
    }
    if options.mitigation == "exposure_rerank":
        weights = fairness.boost_weights()
        summary["mitigation"]["weights"] = dict(zip(fairness.group_labels(), weights.tolist()))
        for strength in options.strengths:
            log.info("fairness: exposure re-rank at strength %g", strength)
            reranked = fairness.ExposureRerank(model, item_group, weights, strength)
            figures, users = _measure(reranked, split, groups, item_group, train_counts, options)
            figures["cost"] = {metric: paired_lift(base_users[metric], users[metric], n_boot=options.n_boot,
                                                   seed=options.seed) for metric in METRICS}
            summary["mitigation"]["runs"][f"{strength:g}"] = figures
    seconds["total"] = round(time.monotonic() - started, 1)
    summary["seconds"] = seconds
    return summary


def run_fairness(settings: Settings, event_log: EventLog, out_dir: Path, attributes: pd.DataFrame | None,
                 options: FairnessOptions = FairnessOptions()) -> dict:
    """``audit`` then its report (fairness.md, fairness.json, plots) into ``out_dir``."""
    from models.fairness_report import write_fairness_report

    summary = audit(settings, event_log, attributes, options)
    write_fairness_report(Path(out_dir), summary)
    return summary
