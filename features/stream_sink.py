"""The stream job's ``foreachBatch``: one micro-batch from Kafka records to online features.

    catalog changes (streams.catalog_topic) -> the fold's catalog, Feast's item view
    toArrow (Spark runs the batch: Kafka read)  -> parse + screen + fold (features.stream_batch)
         + live user vectors against the trained item factors (features.user_vector)
      -> online write (one pipelined round trip) -> state store -> offline log -> features topic, DLQ

Exactly once for features: Spark replays an unfinished batch with the same id and records;
the state store gives each user the state from before that batch, so the replay computes the
same rows; the online write overwrites them, the offline file of the batch id is replaced.
The DLQ and the features topic (each updated user row, for the re-rank worker) are at least
once: a replayed batch may resend; dead letters carry their ``source`` (topic/partition/offset).
So the publish step, last, may be repeated alone: a producer that fails (an idempotent producer's
fatal error is permanent, e.g. once a restarted broker no longer knows its producer id) is dropped
and a new one sends the batch's rows again; a second failure fails the batch.

With ``kill_switch`` (a path; ``FAULT_INJECT_KILL_AFTER_SINK``), the job kills itself with
SIGKILL after the next batch with records once that file exists (removing it first): the fault
suite's crash between a finished sink and Spark's commit.

Each batch appends one JSON line of stats (stage seconds, counts, freshness percentiles over
every folded event) and feeds the same figures to the Prometheus metrics.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
from confluent_kafka import KafkaException, Producer

from features.deletion import forget_offline, forget_online
from features.store import FeatureStoreClient
from features.stream_batch import DeadLetter, Folded, fold_batch, latest_only, parse_records, without_deleted
from features.stream_metrics import StreamMetrics
from features.stream_state import StateStore
from features.user_vector import FactorsFile, FoldIn, item_factors_path
from streamrec.catalog import apply_changes, load_items
from streamrec.config import Settings
from streamrec.events import InvalidEvent
from streams.catalog_topic import CatalogFollower, dead_letter, delivered
from streams.deletions import DeletionFollower
from streams.kafka_source import Fingerprints, last_fingerprints
from streams.kafka_util import keyed_producer
from streams.producer import DeliveryError, EventProducer, open_kafka_producer
from streams.storage import Location

log = logging.getLogger(__name__)

FIRST_CATALOG_POLL_S = 1.0



def percentiles(values_ms, qs=(50, 95, 99)) -> dict:
    if len(values_ms) == 0:
        return {}
    return {f"p{q}": round(float(np.percentile(values_ms, q)), 1) for q in qs}


def feature_producer(cfg) -> Producer:
    """The features topic's producer: librdkafka, since kafka-python's send costs ~60 µs a row in Python
    (a batch publishes every updated user), keyed by user (``keyed_producer``)."""
    return keyed_producer(cfg, **{"linger.ms": 5})


def feature_rows(columns: dict[str, list]) -> list[tuple[bytes, bytes]]:
    """The features topic's records, (user id, JSON row), of a batch's updated users."""
    names = list(columns)
    rows = []
    for row in zip(*columns.values()):
        payload = dict(zip(names, row))
        payload["event_timestamp"] = payload["last_event_ts_ms"]  # JSON-friendly
        rows.append((payload["user_id"].encode("utf-8"), msgspec.json.encode(payload)))
    return rows


def _twice(send: Callable[[list], None], records: list) -> None:
    try:
        send(records)
    except DeliveryError as e:  # the producer that failed is gone: a new one sends the records again
        log.warning("%s; sending them again with a new producer", e)
        send(records)


class StreamSink:
    """The ``foreachBatch`` function. ``floor=True`` keeps only each user's latest event and no state:
    the same source and sink without the fold's state (the engine's floor in ``bench freshness``).
    ``on_batch(stats, event_age_ms)`` receives every batch's figures (the benchmark uses it)."""

    def __init__(self, settings: Settings, stats_path: Path, catalog: Path, *, state_path: Path | Location | None,
                 lateness_ms: int, fingerprints: Path | Location | None = None, epoch: int = 0, metrics: StreamMetrics | None = None,
                 echo=print, on_batch: Callable[[dict, np.ndarray], None] | None = None, kill_switch: Path | None = None):
        self.settings = settings
        self.store = FeatureStoreClient(settings)
        self.state = StateStore(state_path) if state_path is not None else None
        self.fingerprints = Fingerprints(fingerprints) if fingerprints is not None else None
        self.epoch = epoch  # > 0 after --reset-offsets: batch ids start again at 0, offline files must not collide
        self.kill_switch = kill_switch
        self.catalog = load_items(catalog)
        # The trained item factors, read again when training replaces them; none: rows without a live vector.
        self.factors = FactorsFile(item_factors_path(settings)) if settings.features.live_user_vectors else None
        self.lateness_ms = lateness_ms
        self.stats_path = stats_path
        self.metrics = metrics or StreamMetrics()
        self.echo = echo
        self.on_batch = on_batch
        self._dlq: EventProducer | None = None
        self._features: Producer | None = feature_producer(settings.kafka)
        self._catalog_changes: CatalogFollower | None = None
        self._deletions: DeletionFollower | None = None
        self.deleted: dict[str, int] = {}  # user -> deleted at (ms): their events up to then are never folded
        self.last_batch_at = time.monotonic()
        self._parse = functools.partial(
            parse_records, max_bytes=settings.ingest.max_event_bytes, max_future_skew_s=settings.ingest.max_future_skew_seconds
        )

    def __call__(self, batch, batch_id: int) -> None:
        clock = [time.perf_counter()]

        def lap(stage: str) -> None:
            now = time.perf_counter()
            stages[stage] = round(now - clock[0], 4)
            clock[0] = now

        stages: dict[str, float] = {}
        self._follow_catalog()
        self._follow_deletions()
        lap("catalog")
        table = batch.toArrow()  # Spark executes the micro-batch here: planning, Kafka read, Arrow transfer
        lap("spark")
        parsed = self._parse(
            table.column("value").to_pylist(), table.column("topic").to_pylist(), table.column("partition").to_pylist(),
            table.column("offset").to_pylist(),
            table.column("timestamp").cast("int64").to_numpy() // 1000,  # us -> ms
        )
        if self.deleted and (dropped := without_deleted(parsed, self.deleted)):
            self.echo(f"batch {batch_id}: {dropped} event(s) of deleted users not folded")
        lap("parse")
        cfg = self.settings.features
        if self.state is None:
            lap("state_read")
            folded = latest_only(parsed, self.catalog, cfg)
        else:
            before = self.state.load(parsed.by_user, batch_id)
            seen = self.state.seen(((u, p.event["event_id"]) for u, ps in parsed.by_user.items() for p in ps), batch_id)
            lap("state_read")
            factors = self.factors.current() if self.factors is not None else None
            folded = fold_batch(parsed, before, seen, self.catalog, cfg, self.lateness_ms,
                                FoldIn.of(factors, cfg) if factors is not None else None)
        lap("fold")
        if folded.columns:
            self.store.write_session_online(folded.columns)
        visible_ms = time.time() * 1000.0
        lap("online")
        if self.state is not None:  # every batch, even one that changed nobody: the store follows the batch ids
            self.state.save(batch_id, folded.records, folded.folded_ids, folded.horizons)
        if self.fingerprints is not None:  # what the next batch's source and a restarted job check
            self.fingerprints.add(last_fingerprints(table))
        lap("state_write")
        if folded.columns:
            self.store.log_session_offline(folded.columns, f"e{self.epoch}-{batch_id}" if self.epoch else batch_id)
        lap("offline")
        self._publish(folded)
        lap("publish")
        self._report(batch_id, parsed.records, folded, stages, visible_ms)
        self.last_batch_at = time.monotonic()
        if self.kill_switch is not None and parsed.records and self.kill_switch.exists():
            # Fault injection (the fault suite): the batch fully written, Spark's commit not yet.
            self.kill_switch.unlink()
            os.kill(os.getpid(), signal.SIGKILL)

    def _follow_catalog(self) -> None:
        """Catalog changes since the last batch into the fold's catalog and Feast's item view; refused ones to the
        catalog DLQ. The follower starts at the topic's beginning (in a new job, or after a failure here), so every
        change is written again then: the writes are idempotent, the dead letters at least once."""
        cfg = self.settings.kafka
        try:
            first = self._catalog_changes is None
            if self._catalog_changes is None:
                self._catalog_changes = CatalogFollower(self.settings)
            # Once, a moment for the first fetch: a new job folds no event before the changes already published.
            changes, bad = self._catalog_changes.poll(FIRST_CATALOG_POLL_S if first else 0.0)
            merged, refused = apply_changes(self.catalog, [(c.op, c.item) for c in changes])
            if merged:
                self.store.upsert_items(merged)
                self.catalog = {**self.catalog, **merged}
                self.echo(f"catalog: {len(merged)} item(s) added or changed")
            dead = [(b.value, b.error, b.source) for b in bad]
            dead += [(msgspec.json.encode({"op": changes[n].op, "item": changes[n].item}), e, changes[n].source)
                     for n, e in refused]
            if dead:
                producer = open_kafka_producer(cfg)
                try:
                    delivered(producer, [dead_letter(producer, self.settings, value, e.reason, f"{source}: {e}", "stream")
                                         for value, e, source in dead], cfg.request_timeout_ms / 1000)
                finally:
                    producer.close()
        except Exception:
            if self._catalog_changes is not None:  # read again from the start: nothing polled here is lost
                self._catalog_changes.close()
                self._catalog_changes = None
            raise

    def _follow_deletions(self) -> None:
        """Users deleted since the last batch (``streamrec privacy delete-user``): their state, online and offline
        rows removed here, after this job's last write of them; from now on none of their events up to the
        deletion is folded. A new job reads every deletion first (one moment for the first fetch, as for the
        catalog), so neither a restart nor a replay brings a user back."""
        first = self._deletions is None
        try:
            if self._deletions is None:
                self._deletions = DeletionFollower(self.settings)
            fresh = self._deletions.poll(FIRST_CATALOG_POLL_S if first else 0.0)
        except Exception:
            if self._deletions is not None:  # read again from the start: nothing polled here is lost
                self._deletions.close()
                self._deletions = None
            raise
        users = {d.user_id for d in fresh}
        for d in fresh:
            self.deleted[d.user_id] = max(d.deleted_at_ms, self.deleted.get(d.user_id, d.deleted_at_ms))
        if not users:
            return
        # Again after a restart (idempotent): a job stopped halfway through a deletion finishes it.
        state_rows = self.state.forget(users) if self.state is not None else 0
        online = sum(forget_online(self.store, u) for u in users)
        offline = forget_offline(self.store, users)
        self.echo(f"deletions: {len(users)} user(s) forgotten ({state_rows} state, {online} online view, {offline} "
                  "offline row(s))")

    def _publish(self, folded: Folded) -> None:
        if folded.columns:
            _twice(self._send_features, feature_rows(folded.columns))
        if folded.dead:
            _twice(self._send_dead, folded.dead)

    def _send_features(self, rows: list[tuple[bytes, bytes]]) -> None:
        """Every (key, row) to the features topic; DeliveryError (the producer dropped) unless all are stored."""
        if self._features is None:
            self._features = feature_producer(self.settings.kafka)
        topic, timeout_s = self.settings.kafka.features_topic, self.settings.kafka.request_timeout_ms / 1000
        failed: list = []

        def delivered(err, _msg) -> None:  # a fatal error fails every record with _FATAL
            if err is not None:
                failed.append(err)

        try:
            for key, value in rows:
                self._features.produce(topic, value, key=key, on_delivery=delivered)
                self._features.poll(0)
            left = self._features.flush(timeout_s)
        except KafkaException as e:  # produce() refuses once the producer has a fatal error
            failed.append(e.args[0])
            left = 0
        if left or failed:
            # Not reused: a fatal error is permanent, and after a broker restart librdkafka retries until
            # message.timeout.ms (5 min) under a producer id the broker no longer knows. The next one resends.
            self._features.purge()
            self._features = None  # librdkafka's threads end with the last reference
            raise DeliveryError(
                f"{left} feature row(s) unacknowledged after {timeout_s}s (kafka.request_timeout_ms)" if left
                else f"{len(failed)} feature row(s) not delivered to {topic}; first error: {failed[0]}")

    def _send_dead(self, dead: list[DeadLetter]) -> None:
        """Every dead letter to the DLQ; DeliveryError (the producer dropped) unless all are stored."""
        if self._dlq is None:
            self._dlq = EventProducer(self.settings, source="stream", at_edge=False)
        try:
            for d in dead:
                self._dlq.reject(d.value, InvalidEvent(d.reason, d.detail), where=d.source)
            self._dlq.flush(self.settings.kafka.request_timeout_ms / 1000)
        except DeliveryError:
            self._dlq.discard()
            self._dlq = None
            raise

    def _report(self, batch_id: int, records: int, folded: Folded, stages: dict, visible_ms: float) -> None:
        event_age = visible_ms - folded.event_ms.astype(float)
        append_age = visible_ms - folded.kafka_ms.astype(float)
        by_reason = Counter(d.reason for d in folded.dead)
        stats = {
            "batch_id": batch_id,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "records": records,
            "events": int(len(folded.event_ms)),
            "users": folded.users,
            "dlq": len(folded.dead),
            "dlq_by_reason": dict(by_reason),
            "invalid": sum(n for reason, n in by_reason.items() if reason not in ("late_event", "fold_error")),
            "late": by_reason["late_event"],
            "fold_errors": by_reason["fold_error"],
            "duplicates": folded.duplicates,
            "stage_seconds": stages,
            "sink_seconds": round(sum(stages.values()), 4),
            # event time -> visible online, and broker append time -> visible online, over every folded event
            "freshness_event_ms": percentiles(event_age),
            "freshness_ingest_ms": percentiles(append_age),
        }
        if stats["late"] or stats["fold_errors"]:
            log.warning("batch %s: %d late event(s), %d fold error(s) sent to the DLQ", batch_id, stats["late"], stats["fold_errors"])
        with self.stats_path.open("a") as f:
            f.write(json.dumps(stats) + "\n")
        self.metrics.observe_batch(stages, event_age / 1000.0, append_age / 1000.0, by_reason, folded.duplicates, folded.users)
        if self.on_batch is not None:
            self.on_batch(stats, event_age)
        self.echo(
            f"batch {batch_id}: {records} records, {stats['users']} users updated, {stats['dlq']} to DLQ "
            f"({stats['late']} late), {stats['duplicates']} duplicates, event->online p99 "
            f"{stats['freshness_event_ms'].get('p99', float('nan')):.0f} ms"
        )

    def close(self) -> None:
        if self._catalog_changes is not None:
            self._catalog_changes.close()
        if self._deletions is not None:
            self._deletions.close()
        if self._features is not None:
            self._features.flush(self.settings.kafka.request_timeout_ms / 1000)
            self._features = None  # librdkafka's threads end with the last reference
        if self._dlq is not None:
            self._dlq.close()
        if self.state is not None:
            self.state.close()
