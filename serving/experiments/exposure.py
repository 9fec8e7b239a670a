"""The exposure: one served list, as the A/B report and off-policy estimates read it back.

Published by the API for every list it answers (``ExposureLog``), keyed by user on ``kafka.exposures_topic``:
``{"exposure_id", "ts", "user_id", "experiment", "variant", "model_version", "rerank",
"items": [{"item_id", "position", "propensity", "explored"}]}`` (positions from 1; ``propensity`` is the
probability the serving policy had of showing that item in that slot, ``exploration``).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException
from prometheus_client import Counter

from streamrec.config import Settings

if TYPE_CHECKING:
    from confluent_kafka import Producer

    from serving.pipeline import Recommendation

log = logging.getLogger(__name__)

# librdkafka's queue bound: a broker away for long drops (and counts) exposures rather than grow the API's memory.
QUEUE_MAX = 100_000


class BadExposure(ValueError):
    """A record on the exposures topic that is not an exposure."""


@dataclass(frozen=True)
class Shown:
    item_id: str
    position: int
    propensity: float
    explored: bool


@dataclass(frozen=True)
class Exposure:
    exposure_id: str
    ts_ms: int
    user_id: str
    experiment: str
    variant: str
    items: tuple[Shown, ...]


def exposure_record(rec: Recommendation, ts_ms: int) -> dict:
    return {
        "exposure_id": rec.request_id, "ts": ts_ms, "user_id": rec.user_id,
        "experiment": rec.experiment.name, "variant": rec.experiment.variant,
        "model_version": None if rec.model is None else rec.model.version, "rerank": rec.rerank.status,
        "items": [{"item_id": i.item_id, "position": n, "propensity": i.propensity, "explored": i.explored}
                  for n, i in enumerate(rec.items, 1)],
    }


def parse_exposure(value: bytes) -> Exposure:
    try:
        r = json.loads(value)
        items = tuple(Shown(str(i["item_id"]), int(i["position"]), float(i["propensity"]), bool(i["explored"]))
                      for i in r["items"])
        exposure = Exposure(str(r["exposure_id"]), int(r["ts"]), str(r["user_id"]), str(r["experiment"]),
                            str(r["variant"]), items)
    except (ValueError, TypeError, KeyError) as e:
        raise BadExposure(f"not an exposure: {type(e).__name__}: {e}") from None
    if any(not 0.0 < s.propensity <= 1.0 for s in items):
        raise BadExposure("not an exposure: a propensity outside (0, 1]")
    return exposure


class ExposureLog:
    """Publishes exposures without ever making a request wait or fail: librdkafka queues and retries in its own
    thread (a broker that is away is found when it answers), and every outcome is counted in ``counter``. A
    producer in a fatal state is replaced by the next exposure: an idempotent one stays fatal for good after a
    broker lost its tail (DEVELOPERS.md, noida-db)."""

    def __init__(self, settings: Settings, counter: Counter):
        self.topic = settings.kafka.exposures_topic
        self._cfg = settings.kafka
        self._counter = counter
        self._producer: Producer | None = None
        self._fatal = False  # the producer has a fatal error: replace it
        self._lock = threading.Lock()  # the producer is made once; produce() itself is thread-safe

    def log(self, record: dict) -> None:
        from streams.kafka_util import keyed_producer

        with self._lock:
            if self._producer is None or self._fatal:
                self._producer, self._fatal = keyed_producer(
                    self._cfg, **{"linger.ms": 20, "queue.buffering.max.messages": QUEUE_MAX}), False
            producer = self._producer
        try:
            producer.produce(self.topic, json.dumps(record, separators=(",", ":")).encode(),
                             key=record["user_id"].encode(), on_delivery=self._delivered)
            producer.poll(0)
        except BufferError:
            self._counter.labels("dropped").inc()
            log.warning("exposure %s dropped: the producer's queue is full (is the broker away?)", record["exposure_id"])
        except KafkaException as e:  # fatal: this producer refuses everything from now on
            self._counter.labels("failed").inc()
            self._fatal = True
            log.warning("exposure %s not sent (%s); the next one gets a new producer", record["exposure_id"], e)

    def _delivered(self, err, _msg) -> None:
        if err is None:
            self._counter.labels("sent").inc()
            return
        self._counter.labels("failed").inc()
        if err.fatal():
            self._fatal = True
        log.warning("exposure not delivered to %s: %s", self.topic, err)

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait for the queued exposures, up to ``timeout_s``, and only while the broker acknowledges some: one
        that is away would hold every shutdown for the whole timeout."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        deadline, left = time.monotonic() + timeout_s, len(producer)
        while left and not self._fatal and time.monotonic() < deadline:
            try:
                producer.flush(0.5)
            except Exception as e:  # a producer in a fatal state: what it holds is lost, and counted below
                log.warning("exposure log: %s", e)
                break
            left, before = len(producer), left
            if left == before:
                break
        if left:
            self._counter.labels("failed").inc(left)
            log.warning("%d exposure(s) unacknowledged at close (is the broker at %s away?)", left,
                        self._cfg.bootstrap_servers)
