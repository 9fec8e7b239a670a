"""Train the Wide & Deep ranker from a recorded event log, through Feast like the live system.

``prepare`` puts the log where the stream would have: catalog and profile cuts into Feast, the session log
backfilled with the stream's fold; then it builds the labelled entity rows (``models.examples``) of every
positive and joins their features point-in-time (``models.example_set.join_features``). ``fit`` trains on any
subset of those examples; ``train`` fits on all of them and exports a new version for serving.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.backfill import backfill_session_log, log_hash
from features.offline import read_event_log
from models.data import LOG_ORDER, encoded_positives, label_positives
from models.example_set import ExampleSet, join_features
from models.examples import context_inputs, entity_rows, event_frame, item_inputs, pick_positives
from models.wide_deep import LIVE_NUMERIC_INPUTS, NUMERIC_INPUTS, WideDeepConfig, build_model
from streamrec.catalog import catalog_frame, load_items
from streamrec.config import Settings
from streamrec.errors import UserError
from streamrec.pseudonyms import pseudonymizer

log = logging.getLogger(__name__)

DAY = pd.Timedelta(days=1)
MAX_PROFILE_CUTS = 28  # a long log (MovieLens spans months) gets cuts several days apart


@dataclass(frozen=True)
class EventLog:
    """A recorded log and its catalog; ``name`` labels it in reports (e.g. "world", "movielens-100k")."""

    events: Path
    items: Path
    name: str


@dataclass
class Prepared:
    log: EventLog
    interactions: pd.DataFrame  # one row per event with ``label`` (models.data's input)
    catalog: pd.DataFrame       # the catalog's typed rows (streamrec.catalog.catalog_frame)
    examples: ExampleSet        # every positive and its negatives, features joined
    negatives: int
    seed: int

    def data_hashes(self) -> dict[str, str]:
        return {"events": log_hash(self.log.events), "items": log_hash(self.log.items)}


def profile_cuts(first: pd.Timestamp, last: pd.Timestamp) -> list[pd.Timestamp]:
    """Midnights (UTC) after ``first``, one day apart or more so there are at most MAX_PROFILE_CUTS, then ``last``:
    each label sees the newest profile cut strictly before it, and the last cut holds the whole log."""
    start = first.ceil("D") if first != first.ceil("D") else first + DAY
    days = max(int((last - start) / DAY), 0)
    step = max(1, -(-days // MAX_PROFILE_CUTS))
    return [start + n * DAY for n in range(0, days + 1, step) if start + n * DAY < last] + [last]


def prepare(settings: Settings, event_log: EventLog, *, negatives: int = 4, seed: int = 0) -> Prepared:
    """Feast set up for the log (definitions, catalog, profile cuts, backfilled session log) and the labelled
    examples of every positive with their point-in-time features."""
    from features.store import FeatureStoreClient

    catalog = catalog_frame(load_items(event_log.items))
    events = event_frame(read_event_log(event_log.events, users=pseudonymizer(settings)))
    interactions = label_positives(events[["user_id", "item_id", "ts_ms", "event_type", "watch_seconds", LOG_ORDER]],
                                   None, 0.0)
    positives = decoded_positives(interactions)
    unknown = sorted(set(positives["item_id"]) - set(catalog["item_id"]))
    if unknown:
        raise UserError(f"{len(unknown)} watched item(s) are not in the catalog {event_log.items}, e.g. {unknown[:3]}")

    client = FeatureStoreClient(settings)
    client.apply()
    client.load_catalog(event_log.items)
    times = pd.to_datetime(events["ts_ms"], unit="ms", utc=True)
    cuts = profile_cuts(times.min(), times.max())
    for cut in cuts:  # online, only the last: what serving would read now
        client.build_profiles(events, cut, online=cut == cuts[-1])
    rows = backfill_session_log(settings, event_log.events, event_log.items)
    log.info("feast: %d items, %d profile cuts, %d backfilled session rows", len(catalog), len(cuts), rows)

    picked = pick_positives(events, positives)
    entities = entity_rows(picked, events, catalog["item_id"], negatives, seed)
    log.info("training set: %d positives x (1 + %d negatives), features from Feast", len(picked), negatives)
    examples = join_features(entities, client)
    return Prepared(event_log, interactions, catalog, examples, negatives, seed)


def decoded_positives(interactions: pd.DataFrame) -> pd.DataFrame:
    """models.data's positives (a user-item pair at its first watch) by id: user_id, item_id, ts_ms, seq."""
    pos, users, items = encoded_positives(interactions)
    return pd.DataFrame({
        "user_id": users.decode(pos["user_idx"]), "item_id": items.decode(pos["item_idx"]), "ts_ms": pos["ts_ms"],
        LOG_ORDER: pos[LOG_ORDER],
    })


def fit(
    examples: ExampleSet, item_ids, *, live: bool, config: WideDeepConfig, seed: int, timezone: str = "UTC",
    progress: bool = True,
) -> tuple:
    """(``models.wide_deep.WideDeep``, final-epoch training metrics) trained on ``examples`` (e.g. part of
    ``Prepared.examples``); ``item_ids``: the catalog. Same examples, seed and config give the same weights (seeded
    order, deterministic ops)."""
    import keras
    import tensorflow as tf

    if len(examples) == 0:
        raise UserError("no training examples")
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    requests = context_inputs(examples.requests, timezone, live)
    items = item_inputs(examples.items)
    # The numeric features' statistics over the training examples, each request and item counted per example.
    numeric = {name: table[name][rows] for table, rows in ((requests, examples.request_row), (items, examples.item_row))
               for name in (*NUMERIC_INPUTS, *LIVE_NUMERIC_INPUTS) if name in table}
    users = sorted(examples.requests["user_id"].iloc[np.unique(examples.request_row)].unique())
    model = build_model(users, list(item_ids), live, numeric, config)
    trainer = model.trainer(config, model.encode(requests), model.encode(items))
    # A live progress bar on a terminal, one line per epoch in a log.
    verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
    # Keras shuffles the row pairs anew each epoch, seeded by set_random_seed.
    history = trainer.fit({"request_row": examples.request_row[:, None], "item_row": examples.item_row[:, None]},
                          examples.label, batch_size=config.batch_size, epochs=config.epochs, shuffle=True,
                          verbose=verbose)
    return model, {name: float(values[-1]) for name, values in history.history.items()}


def train(
    settings: Settings, event_log: EventLog, *, live: bool = True, config: WideDeepConfig = WideDeepConfig(),
    negatives: int = 4, seed: int = 0, progress: bool = True,
) -> dict:
    """Prepare, fit on every positive, export a new version to ``<data>/model_repo/<model.name>/``; returns a
    summary (version, path, examples, train metrics)."""
    from models.examples import item_frame
    from models.export import export_model

    prepared = prepare(settings, event_log, negatives=negatives, seed=seed)
    model, train_metrics = fit(prepared.examples, prepared.catalog["item_id"], live=live, config=config, seed=seed,
                               timezone=settings.features.timezone, progress=progress)
    metadata: dict[str, Any] = {
        "live": live,
        "seed": seed,
        "config": config.to_dict(),
        "feature_config": dataclasses.asdict(settings.features),
        "training_data": {
            "dataset": event_log.name,
            "events_path": str(event_log.events),
            "items_path": str(event_log.items),
            "sha256_16": prepared.data_hashes(),
            "positives": prepared.examples.positives,
            "examples": len(prepared.examples),
            "negatives_per_positive": negatives,
        },
        "metrics": {"train": train_metrics},
    }
    version, path = export_model(model.model, settings.data_path / "model_repo" / settings.model.name, live, metadata,
                                 items=item_frame(prepared.catalog.to_dict("records")))
    retrieval = fit_retrieval(settings, event_log)
    return {"version": version, "path": str(path), "retrieval": str(retrieval), **metadata["training_data"],
            "metrics": metadata["metrics"]}


def fit_retrieval(settings: Settings, event_log: EventLog) -> Path:
    """The candidate generator the recommend API loads, fitted on the same log, with the items' text embeddings."""
    from models.retrieval import CandidateGenerator, load_event_log, retrieval_dir
    from models.text_embedding import item_text, text_encoder

    items = load_items(event_log.items)
    ids = list(items)
    texts = dict(zip(ids, text_encoder().encode([item_text(items[i]) for i in ids])))
    generator = CandidateGenerator.fit(load_event_log(event_log.events, items, users=pseudonymizer(settings)), items,
                                       index_k=settings.serving.candidates, timezone=settings.features.timezone,
                                       texts=texts)
    return generator.save(retrieval_dir(settings))
