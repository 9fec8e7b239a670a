"""Stream step 3: each micro-batch into Feast (online + offline log) and the DLQ; per-batch stats.

Exactly once for features: Spark recomputes an unfinished batch from its
checkpointed state with the same batch id, the online write is an upsert of
the same latest state, and the offline file is named by batch id and replaced.
The DLQ and the features topic (each updated user row, for the re-rank worker)
are at least once: a recomputed batch may resend; dead letters carry their
``source`` (topic/partition/offset) so readers can tell, and a feature row
sent twice is the same row.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from features.store import FeatureStoreClient
from streamrec.config import Settings
from streams.producer import EventProducer, open_kafka_producer
from streams.schema import InvalidEvent

log = logging.getLogger(__name__)


def percentiles(values_ms, qs=(50, 95, 99)) -> dict:
    if len(values_ms) == 0:
        return {}
    return {f"p{q}": float(np.percentile(values_ms, q)) for q in qs}


def feature_frame(payloads: pd.Series) -> pd.DataFrame:
    rows = [json.loads(p) for p in payloads]
    frame = pd.DataFrame(rows)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], unit="ms", utc=True)
    return frame


class FeastSink:
    """The ``foreachBatch`` function; also appends one JSON line of stats per batch."""

    def __init__(self, settings: Settings, stats_path: Path, echo=print):
        self.settings = settings
        self.store = FeatureStoreClient(settings)
        self.stats_path = stats_path
        self.echo = echo
        self._dlq: EventProducer | None = None
        self._features = open_kafka_producer(settings.kafka)

    def _dead_letter(self, rows: pd.DataFrame) -> None:
        if self._dlq is None:
            self._dlq = EventProducer(self.settings, source="stream")
        for value, source, reason, detail in zip(rows["value"], rows["source"], rows["reason"], rows["detail"]):
            self._dlq.reject(bytes(value), InvalidEvent(reason, detail), where=source)
        self._dlq.flush()

    def _publish_features(self, rows: pd.DataFrame) -> None:
        topic = self.settings.kafka.features_topic
        for user_id, payload in zip(rows["user_id"], rows["payload"]):
            self._features.send(topic, payload.encode("utf-8"), key=user_id.encode("utf-8"))
        self._features.flush()

    def __call__(self, batch, batch_id: int) -> None:
        started = time.time()
        frame = batch.toPandas()
        kinds = frame["kind"]
        features = frame[kinds == "features"]
        dead = frame[kinds == "dlq"]
        written = self.store.write_session_features(feature_frame(features["payload"]), batch_id) if len(features) else 0
        visible_ms = time.time() * 1000.0
        if len(features):
            self._publish_features(features)
        if len(dead):
            self._dead_letter(dead)
        stats = {
            "batch_id": batch_id,
            "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "users": int(len(features)),
            "written": int(written),
            "dlq": int(len(dead)),
            "invalid": int((dead["reason"] != "late_event").sum()),
            "late": int((dead["reason"] == "late_event").sum()),
            "duplicates": int((kinds == "duplicate").sum()),
            "sink_seconds": round(time.time() - started, 4),
            # event time -> visible online, and broker append time -> visible online
            "freshness_event_ms": percentiles(visible_ms - features["event_ms"].to_numpy(dtype=float)),
            "freshness_ingest_ms": percentiles(visible_ms - features["kafka_ms"].to_numpy(dtype=float)),
        }
        if stats["late"]:
            log.warning("batch %s: %d late event(s) sent to the DLQ as late_event", batch_id, stats["late"])
        with self.stats_path.open("a") as f:
            f.write(json.dumps(stats) + "\n")
        self.echo(
            f"batch {batch_id}: {stats['users']} users updated, {stats['dlq']} to DLQ "
            f"({stats['late']} late), {stats['duplicates']} duplicates, ingest->online p95 "
            f"{stats['freshness_ingest_ms'].get('p95', float('nan')):.0f} ms"
        )

    def close(self) -> None:
        self._features.close()
        if self._dlq is not None:
            self._dlq.close()
