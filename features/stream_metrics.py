"""Prometheus metrics of the stream job, served on ``/metrics`` (``spark.metrics_port``; 0 = off).

The freshness histograms take a whole batch of event times at once: a micro-batch folds
thousands of events, and ``Histogram.observe`` per event would cost more than the fold, so
they are kept as numpy bucket counts and exposed through a collector.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from streamrec.errors import UserError
from streamrec.prometheus import single_process_values

FRESHNESS_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
STAGE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class BulkHistogram(Collector):
    """A histogram fed whole arrays of observations (seconds)."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]):
        self.name, self.documentation = name, documentation
        self.bounds = np.array(sorted(buckets), dtype=float)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last one is +Inf
        self.total = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values_s: np.ndarray) -> None:
        values_s = np.asarray(values_s, dtype=float)
        if not len(values_s):
            return
        # Prometheus buckets are "<= bound": side="left" puts a value equal to a bound in that bucket.
        per_bucket = np.bincount(np.searchsorted(self.bounds, values_s, side="left"), minlength=len(self.counts))
        with self._lock:
            self.counts += per_bucket
            self.total += float(values_s.sum())

    def collect(self):
        with self._lock:
            cumulative = np.cumsum(self.counts).tolist()
            total = self.total
        labels = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=list(zip(labels, cumulative)), sum_value=total)


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        single_process_values()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.event_to_online = BulkHistogram(
            "streamrec_stream_event_to_online_seconds", "Event time to the online write of the row holding it, per event",
            FRESHNESS_BUCKETS_S)
        self.append_to_online = BulkHistogram(
            "streamrec_stream_append_to_online_seconds", "Broker append time to the online write, per event",
            FRESHNESS_BUCKETS_S)
        r.register(self.event_to_online)
        r.register(self.append_to_online)
        self.stage = Histogram("streamrec_stream_batch_stage_seconds", "Micro-batch time by stage", ["stage"],
                               buckets=STAGE_BUCKETS_S, registry=r)
        self.lag = Gauge("streamrec_stream_consumer_lag", "Records in Kafka not yet processed", ["topic", "partition"], registry=r)
        self.dead = Counter("streamrec_stream_dead_letters", "Records sent to the DLQ, by reason", ["reason"], registry=r)
        self.events = Counter("streamrec_stream_events_folded", "Events folded into user features", registry=r)
        self.duplicates = Counter("streamrec_stream_duplicates", "Duplicate events dropped", registry=r)
        self.users = Counter("streamrec_stream_user_rows_written", "User feature rows written online", registry=r)
        self.batches = Counter("streamrec_stream_batches", "Micro-batches completed", registry=r)

    def observe_batch(self, stages_s: Mapping[str, float], event_age_s: np.ndarray, append_age_s: np.ndarray,
                      dead_by_reason: Mapping[str, int], duplicates: int, users: int) -> None:
        for stage, seconds in stages_s.items():
            self.stage.labels(stage).observe(seconds)
        self.event_to_online.observe_many(event_age_s)
        self.append_to_online.observe_many(append_age_s)
        for reason, n in dead_by_reason.items():
            self.dead.labels(reason).inc(n)
        self.events.inc(len(event_age_s))
        self.duplicates.inc(duplicates)
        self.users.inc(users)
        self.batches.inc()

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), n in lag.items():
            self.lag.labels(topic, str(partition)).set(n)

    def serve(self, port: int, host: str = "127.0.0.1"):
        """Start ``/metrics`` in a daemon thread; returns the server (``shutdown()`` stops it)."""
        try:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise UserError(f"cannot serve the stream job's /metrics on {host}:{port}: {e.strerror} "
                            "(set spark.metrics_port to a free port, or 0 for none)") from None
        return server
