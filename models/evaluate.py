"""Offline evaluation: the baselines a practitioner would pick (popularity; item-KNN capped at 100 neighbours and
uncapped; session-KNN over the user's 10 latest items; BPR and ALS matrix factorisation; SASRec, a sequential
Transformer) and Wide & Deep, with and without live features, under the same splits.

Protocols (splits from ``models.data``, metrics from ``models.protocols``; k = 10):
- ``loo``: each user's last positive against 99 items the user never interacted with (seeded); HR@10, NDCG@10.
- ``full``: ``time_user`` split, each user's last 25% of positives are the test; every item without a train
  positive of the user is ranked; precision, recall, NDCG, MAP@10 and catalog coverage@10.

Wide & Deep trains on the examples (``models.train.prepare``, in a feature store of the evaluation's own) of
the split's train positives only, their negatives drawn from what each user had not touched by then, with the
item ``popularity`` feature recounted from the split's train positives (``streams.movielens.relative_popularity``)
for every dataset, so nothing of the test period reaches training or scoring. It scores a test user as of a
context: under ``loo`` the held-out pick, under ``full`` the user's first test pick (its time and device;
features strictly before it, point in time, from the same backfilled history), through the serving model's own
encoders (``models.wide_deep.WideDeep``), each context and item encoded once.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.baselines import ALS, BPR, ItemKNN, MostPopular, SASRec, SessionKNN
from models.baselines.recommender import Recommender
from models.data import LOG_ORDER, FullSplit, LooSplit, make_split
from models.example_set import ExampleSet
from models.examples import context_inputs, item_inputs
from models.protocols import run
from models.seed_summary import combine
from models.train import EventLog, Prepared, fit, prepare
from models.wide_deep import WideDeep, WideDeepConfig
from streamrec.config import PrivacyConfig, Settings
from streamrec.errors import UserError
from streams.movielens import relative_popularity

log = logging.getLogger(__name__)

K = 10
LOO_NEGATIVES = 99
PROTOCOLS = {
    "loo": f"leave-last-out: each user's last positive ranked among {LOO_NEGATIVES} sampled items the user never "
           f"interacted with (users with >= 2 positives); HR@{K}, NDCG@{K}",
    "full": f"time_user: each user's last 25% of positives (by first-watch time) are the test set; every item "
            f"without a train positive of the user is ranked; precision, recall, NDCG, MAP@{K}, coverage@{K}",
}


class WideDeepRanker:
    """The Recommender view of Wide & Deep on one split: ``fit`` trains on the split's train positives (their
    examples and negatives), ``score`` ranks items for each user as of the user's context row."""

    def __init__(self, prepared: Prepared, split: LooSplit | FullSplit, contexts: pd.DataFrame, *, live: bool,
                 config: WideDeepConfig, seed: int, timezone: str, progress: bool):
        self.prepared, self.split, self.contexts = prepared, split, contexts
        self.live, self.config, self.seed, self.timezone, self.progress = live, config, seed, timezone, progress
        self.popularity = train_popularity(split, prepared.catalog["item_id"])
        self.items = (prepared.catalog.set_index("item_id").loc[split.items.ids].reset_index()
                      .assign(popularity=lambda items: items["item_id"].map(self.popularity)))
        self.model: WideDeep | None = None
        self.train_metrics: dict = {}

    def training_examples(self, train: pd.DataFrame) -> ExampleSet:
        """The examples ``fit`` trains on: those of the ``train`` positives (their negatives with them), with the
        train period's popularity."""
        pairs = pd.DataFrame({"user_id": self.split.users.decode(train["user_idx"]),
                              "item_id": self.split.items.decode(train["item_idx"])})
        examples = self.prepared.examples
        groups = examples.requests[["group", "user_id", "item_id"]].merge(pairs)["group"]
        return examples.of_groups(groups).with_items(
            examples.items.assign(popularity=examples.items["item_id"].map(self.popularity)))

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> WideDeepRanker:
        self.model, self.train_metrics = fit(
            self.training_examples(train), self.prepared.catalog["item_id"], live=self.live,
            config=self.config, seed=self.seed, timezone=self.timezone, progress=self.progress,
        )
        # Each test user's context and each item encoded once; scoring gathers (context, item) pairs of them.
        self._encoded = (self.model.encode(context_inputs(self.contexts, self.timezone, self.live)),
                         self.model.encode(item_inputs(self.items)))
        return self

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("WideDeepRanker is not fitted: call fit() first")
        contexts = self.contexts.index.get_indexer(np.asarray(user_idx))
        if (contexts < 0).any():
            raise ValueError("a user to score has no context row")
        n = len(self.items) if item_idx is None else np.asarray(item_idx).shape[1]
        items = np.tile(np.arange(n), len(contexts)) if item_idx is None else np.asarray(item_idx).ravel()
        return self.model.score(*self._encoded, np.repeat(contexts, n), items).reshape(len(contexts), n)


def train_popularity(split: LooSplit | FullSplit, item_ids) -> pd.Series:
    """Each catalog item's ``popularity`` as the split's train positives give it (item_id -> value)."""
    ids = pd.Index(item_ids)
    counts = np.bincount(ids.get_indexer(split.items.decode(split.train["item_idx"])), minlength=len(ids))
    return pd.Series(relative_popularity(counts), index=ids)


def context_rows(prepared: Prepared, split: LooSplit | FullSplit) -> pd.DataFrame:
    """Per test user (index: user_idx), the request row of the pick W&D scores the user at: the held-out pick
    (loo) or the first test pick (full); its features are those strictly before that pick."""
    if isinstance(split, LooSplit):
        users, items = split.test_users, split.test_items
    else:
        first = split.test.sort_values(["user_idx", "ts_ms", LOG_ORDER], kind="stable").drop_duplicates("user_idx")
        users, items = first["user_idx"].to_numpy(), first["item_idx"].to_numpy()
    wanted = pd.DataFrame({"user_idx": users, "user_id": split.users.decode(users),
                           "item_id": split.items.decode(items)})
    rows = wanted.merge(prepared.examples.requests, on=["user_id", "item_id"], how="left")
    if rows["group"].isna().any() or len(rows) != len(wanted):
        raise ValueError("a test pick has no example row: examples and split disagree on the positives")
    return rows.set_index("user_idx")


def baseline_models(seed: int, progress: bool) -> dict[str, Recommender]:
    """The baselines by report name, unfitted."""
    return {
        "most-popular": MostPopular(),
        "item-knn": ItemKNN(),
        "item-knn-all": ItemKNN(neighbours=None),
        "session-knn": SessionKNN(),
        "bpr": BPR(seed=seed, progress=progress),
        "als": ALS(seed=seed, progress=progress),
        "sasrec": SASRec(seed=seed, progress=progress),
    }


def _models(prepared: Prepared, split, settings: Settings, config: WideDeepConfig, seed: int, progress: bool) -> dict:
    contexts = context_rows(prepared, split)
    ranker = dict(prepared=prepared, split=split, contexts=contexts, config=config, seed=seed,
                  timezone=settings.features.timezone, progress=progress)
    return {
        **baseline_models(seed, progress),
        "wide-deep": WideDeepRanker(live=True, **ranker),
        "wide-deep-no-live": WideDeepRanker(live=False, **ranker),
    }


def scratch_settings(settings: Settings, name: str) -> Settings:
    """The evaluation's own feature store, under ``<data>/evaluate/<name>`` with the embedded SQLite online store:
    an offline comparison must not replace the live catalog and profiles, nor write to a shared Redis. Ids as the
    files have them (no pseudonyms): nothing leaves the scratch dir, and the fairness audit joins its users'
    attributes by them."""
    return dataclasses.replace(settings, data_dir=str(settings.data_path / "evaluate" / name),
                               feast=dataclasses.replace(settings.feast, online_store="sqlite"),
                               privacy=PrivacyConfig())


def evaluate(
    settings: Settings, event_log: EventLog, *, protocols: tuple[str, ...] = ("loo", "full"),
    seeds: Sequence[int] = (0,), config: WideDeepConfig = WideDeepConfig(), negatives: int = 4,
    progress: bool = True,
) -> dict:
    """The baselines and both Wide & Deep variants under each protocol, once per seed (splits, negatives and
    training); returns the figures ``models.report`` writes (``models.seed_summary.combine``: per model the mean
    metrics over seeds and their spread, users tested and skipped, W&D's training loss/AUC, the paired difference to
    the best baseline)."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise UserError(f"unknown protocol(s) {unknown}; choose from {', '.join(PROTOCOLS)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be distinct and at least one, got {list(seeds)}")
    runs = []
    for n, seed in enumerate(seeds, 1):
        log.info("seed %d (%d of %d)", seed, n, len(seeds))
        runs.append(_evaluate_seed(settings, event_log, protocols, seed, config, negatives, progress))
    return combine(runs, seeds)


def _evaluate_seed(settings: Settings, event_log: EventLog, protocols: tuple[str, ...], seed: int,
                   config: WideDeepConfig, negatives: int, progress: bool) -> tuple[dict, dict]:
    """One seed's summary and per-user figures, ``(summary, {(protocol, model): per-user frame})``."""
    started = time.monotonic()
    prepared = prepare(scratch_settings(settings, event_log.name), event_log, negatives=negatives, seed=seed)
    seconds: dict = {"prepare": round(time.monotonic() - started, 1)}
    interactions = prepared.interactions
    summary: dict[str, Any] = {
        "dataset": {
            "name": event_log.name, "events_path": str(event_log.events), "items_path": str(event_log.items),
            "sha256_16": prepared.data_hashes(), "events": len(interactions),
            "users": int(interactions["user_id"].nunique()), "catalog_items": len(prepared.catalog),
            "positives": prepared.examples.positives,
        },
        "seed": seed,
        "negatives_per_positive": negatives,
        "wide_deep_config": config.to_dict(),
        "feature_config": dataclasses.asdict(settings.features),
        "protocols": {},
    }
    per_user: dict[tuple[str, str], pd.DataFrame] = {}
    for protocol in protocols:
        split = make_split(interactions, "loo", n_negatives=LOO_NEGATIVES, seed=seed) if protocol == "loo" \
            else make_split(interactions, "time_user")
        models, figures, seconds[protocol] = _models(prepared, split, settings, config, seed, progress), {}, {}
        for name, model in models.items():
            log.info("%s: %s", protocol, name)
            t0 = time.monotonic()
            result = run(model, split, k=K)
            seconds[protocol][name] = round(time.monotonic() - t0, 1)
            per_user[protocol, name] = result.pop("per_user")
            figures[name] = result | ({"train": model.train_metrics} if isinstance(model, WideDeepRanker) else {})
        summary["protocols"][protocol] = {
            "description": PROTOCOLS[protocol],
            "k": K,
            "split": {"users": split.n_users, "items": split.n_items, "train_positives": len(split.train)},
            "models": figures,
        }
    summary["seconds"] = seconds | {"total": round(time.monotonic() - started, 1)}
    return summary, per_user


def check_finite(summary: dict) -> None:
    """A NaN metric means something upstream broke; say so rather than report it."""
    for protocol, block in summary["protocols"].items():
        for model, figures in block["models"].items():
            bad = [m for m, v in figures.items() if isinstance(v, float) and not np.isfinite(v)]
            if bad:
                raise UserError(f"{protocol}/{model}: metrics {bad} are not finite")


def run_evaluation(settings: Settings, event_log: EventLog, out_dir: Path, **options) -> dict:
    """``evaluate`` then the report (report.md, metrics.json, plots) into ``out_dir``."""
    from models.report import write_report

    summary = evaluate(settings, event_log, **options)
    check_finite(summary)
    write_report(Path(out_dir), summary)
    return summary
