"""Live user vectors (issue 16): a user unknown at training watches a few titles; the running stream job folds
their vector in against the trained item factors, and the pipeline's candidates move toward what they watched
within the freshness budget, with no retraining. The online vector is the batch fold's (stream = batch)."""
from __future__ import annotations

import dataclasses
import json
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from features import stream_job
from features.offline import compute_features, read_event_log
from features.store import FeatureStoreClient
from features.user_vector import FoldIn
from models.baselines import BPR
from models.retrieval import CandidateGenerator, load_event_log, retrieval_dir
from serving.pipeline import ItemCatalog, Pipeline, Scorer
from serving.tf_client import PredictClient
from streamrec.catalog import load_items
from streams.generator import generate_world
from streams.producer import EventProducer
from tests.helpers import assert_eventually, free_port

pytestmark = pytest.mark.integration

FRESHNESS_BUDGET_S = 5.0  # as test_new_items: event sent -> recommendations changed (the goal is ~1 s; see README)
NEW_USER = "u-live-newcomer"
# The requests' moment: a fixed weekday evening, so the context (and with it contextual popularity and the cold
# list the newcomer's watches are picked against) does not follow the hour the test runs at.
AT_MS = int(datetime(2026, 11, 25, 20, tzinfo=UTC).timestamp() * 1000)


def _cosines(generator: CandidateGenerator, item_ids, centre: np.ndarray) -> np.ndarray:
    """Cosine of each item's MF factors with ``centre`` (items MF does not know: 0)."""
    factors = generator.item_factors
    assert factors is not None
    rows = [factors.rows.get(i) for i in item_ids]
    out = np.zeros(len(rows))
    for n, row in enumerate(rows):
        if row is not None:
            y = factors.factors[row]
            out[n] = y @ centre / (np.linalg.norm(y) * np.linalg.norm(centre))
    return out


def test_a_new_users_candidates_move_toward_what_they_just_watched_within_the_budget(spark, stream_settings, tmp_path):
    # Fewer candidates than the catalog's items, so retrieval decides what is shortlisted.
    settings = dataclasses.replace(stream_settings, serving=dataclasses.replace(stream_settings.serving, candidates=30))
    world = tmp_path / "world"
    generate_world(world, users=150, items=120, days=2.0, seed=5)  # its fixed start: the same model every run
    items = load_items(world / "items.jsonl")
    # Trained without the newcomer; saving writes the item factors where the stream job reads them.
    generator = CandidateGenerator.fit(load_event_log(world / "events.jsonl", items), items,
                                       bpr=BPR(factors=16, epochs=60, progress=False))
    generator.save(retrieval_dir(settings))
    assert NEW_USER not in generator.user_ids and generator.item_factors is not None
    factors = generator.item_factors

    store = FeatureStoreClient(settings)
    store.apply()
    store.load_catalog(world / "items.jsonl")
    # No model server: W&D falls back to the retrieval order, which is what the live vector changes (the ranker
    # has no input it could feed without retraining).
    pipeline = Pipeline(settings, store, generator, Scorer(PredictClient("127.0.0.1", free_port(), "none")), None,
                        ItemCatalog.load(store, list(generator.catalog.ids)))

    # What the newcomer watches: the title farthest from what a cold user is shown, and its two nearest in MF space.
    cold = pipeline.shortlist(NEW_USER, "tv", at_ms=AT_MS)
    assert cold.cold_start and "embedding" not in {s.source for s in cold.items}
    cold_centre = factors.factors[[factors.rows[s.item_id] for s in cold.items if s.item_id in factors.rows]].mean(0)
    seed = factors.ids[int(np.argmin(_cosines(generator, factors.ids, cold_centre)))]
    near = _cosines(generator, factors.ids, factors.factors[factors.rows[seed]])
    watched = [factors.ids[i] for i in np.argsort(-near, kind="stable")[:3]]
    centre = factors.factors[[factors.rows[i] for i in watched]].mean(0)
    before = float(_cosines(generator, [s.item_id for s in cold.items], centre).mean())

    sink = stream_job.open_sink(settings, catalog=world / "items.jsonl", echo=lambda *_: None)
    query = stream_job.start_query(spark, settings, sink, available_now=False, name="live_user_vectors")
    producer = EventProducer(settings)
    try:
        # Warm up: the first batch with records starts the executor's Python worker, which takes seconds.
        producer.send(_watch("u-warm-up", factors.ids[0], int(time.time() * 1000), "s-warm", items))
        producer.flush(10)
        assert_eventually(lambda: _assert(store.online_features(["u-warm-up"])[0]["user_vector"]), 120, 0.2)

        now = AT_MS - 1000  # the newcomer's watches, a moment before the requests below
        events = [_watch(NEW_USER, item, now - 3 + n, "s-live", items) for n, item in enumerate(watched)]
        for event in events:
            producer.send(event)
        producer.flush(10)
        sent = time.monotonic()

        def moved():
            short = pipeline.shortlist(NEW_USER, "tv", at_ms=AT_MS)
            shown = [s.item_id for s in short.items]
            assert short.session is not None and short.session["user_vector"] is not None, shown
            # MF places titles for the newcomer (a cold user has none), nearer what they watched in MF space than
            # the cold list was. (The rest of the list, contextual popularity, follows the hour the test runs at.)
            placed = [s.item_id for s in short.items if s.source == "embedding"]
            assert placed, shown
            after = float(_cosines(generator, placed, centre).mean())
            assert after > before + 0.1, (before, after, shown)
            return short, after

        short, after = assert_eventually(moved, timeout_s=FRESHNESS_BUDGET_S, interval_s=0.05)
        took = time.monotonic() - sent
        print(f"event sent -> candidates moved in {took:.2f}s; mean MF cosine to what was watched: cold list "
              f"{before:.2f}, the live vector's MF candidates {after:.2f}")
        assert not set(watched) & {s.item_id for s in short.items}  # just watched: not recommended again
    finally:
        producer.close()
        query.stop()
        sink.close()

    # The stream's vector is the batch fold's over the same events, against the same factors.
    log = tmp_path / "newcomer.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    (expected,) = compute_features(read_event_log(log), items, settings.features,
                                   FoldIn.of(factors, settings.features))["user_vector"]
    (row,) = store.online_features([NEW_USER])
    assert row["user_vector_model"] == factors.version
    np.testing.assert_allclose(row["user_vector"], expected, rtol=1e-6)


def _watch(user_id: str, item_id: str, ts_ms: int, session_id: str, items: dict) -> dict:
    """A watch of the whole title."""
    return {"event_id": str(uuid.uuid4()), "event_type": "watch", "user_id": user_id, "item_id": item_id,
            "ts": ts_ms, "device": "tv", "session_id": session_id,
            "watch_seconds": 60 * items[item_id]["duration_minutes"]}


def _assert(value) -> None:
    assert value is not None
