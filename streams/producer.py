"""Publish events: valid ones canonically to the events topic, invalid ones to the DLQ.

Valid events are keyed by ``user_id`` so one user's events stay ordered in one
partition. Invalid input is never dropped: it goes to the DLQ topic with its
original bytes and headers ``reason``, ``detail`` and ``source``.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from typing import NamedTuple

import msgspec
from kafka import KafkaProducer
from kafka.errors import KafkaConfigurationError, KafkaTimeoutError, UnsupportedVersionError
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.producer.future import FutureRecordMetadata

from streamrec.config import KafkaConfig, Settings
from streamrec.errors import UserError
from streamrec.events import Event, InvalidEvent, as_bytes, parse_event
from streamrec.pseudonyms import pseudonymizer
from streams.kafka_util import client_options, ensure_topics

log = logging.getLogger(__name__)

# Throughput first: kafka-python spends much per request, so records wait up to 50 ms
# (far below the stream job's 1 s trigger) to share a batch of up to 256 KiB.
# acks=all: an event counts as delivered once every in-sync replica has it.
TUNING = {"acks": "all", "linger_ms": 50, "batch_size": 262144}

# Kafka refuses records over its max message size (1 MiB by default); a DLQ value
# beyond this is cut and the header ``truncated_from`` keeps its original length.
DLQ_VALUE_LIMIT = 900_000


class DeliveryError(UserError):
    """The broker did not take records that were handed to the producer.

    The producer may be unusable from then on: an idempotent one stays in a fatal state once the broker
    no longer knows its producer id or sequence (a broker that lost its data, or its tail in a crash). A long-lived caller
    ``discard``s it and opens a new one.
    """


class Outcome(NamedTuple):
    accepted: bool
    event: Event | None = None
    reason: str | None = None
    detail: str | None = None
    future: FutureRecordMetadata | None = None


def producer_options(cfg: KafkaConfig) -> dict:
    """kafka-python producer options shared by the SDK and the ingest benchmark; client_options override.

    Finding the broker (at start) and a topic's metadata (on a send) wait no longer than a request:
    a caller replacing a failed producer learns within that time that the broker is still away."""
    wait = cfg.request_timeout_ms
    return {**TUNING, "request_timeout_ms": wait, "bootstrap_timeout_ms": wait, "max_block_ms": wait, **client_options(cfg)}


def open_kafka_producer(cfg: KafkaConfig, **overrides) -> KafkaProducer:
    """An idempotent producer (retries cannot duplicate or reorder), or a plain one if the broker cannot.

    ``overrides`` are kafka-python producer options that win over the configured ones.
    """
    # Every producer (the SDK's and the benchmark's raw baseline alike) partitions with the memo.
    opts = {**producer_options(cfg), "partitioner": MemoPartitioner(), **overrides}
    try:
        try:
            return KafkaProducer(**{"enable_idempotence": True, **opts})
        except (KafkaConfigurationError, UnsupportedVersionError) as e:
            log.warning(
                "broker at %s does not support idempotent producing (%s); continuing without it, "
                "so a retried send may duplicate an event (the stream job drops duplicates by event_id)",
                cfg.bootstrap_servers, e,
            )
            return KafkaProducer(**{**opts, "enable_idempotence": False})
    except KafkaTimeoutError:
        raise UserError(f"no Kafka broker answers at {cfg.bootstrap_servers} (start one with 'streamrec infra up')") from None


# How many keys' hashes a MemoPartitioner keeps before it starts afresh (a few MB).
MEMO_KEYS = 100_000


class MemoPartitioner(DefaultPartitioner):
    """kafka-python's default partitioner (murmur2, as the Java client) remembering each key's hash.

    The default one hashes in pure Python and sorts and filters the partitions for every record,
    costing about as much as validating the event. Events are keyed by user and users come back,
    so most records find their key's hash here.
    """

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        h = self._hashes.get(serialized_key)
        if h is None:
            if len(self._hashes) >= MEMO_KEYS:
                self._hashes.clear()
            h = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        return sorted(partitions)[h % len(partitions)]


class EventProducer:
    """Validate and publish events; ``accepted``/``rejected`` count them, ``reasons`` counts rejections by code.

    ``source`` names the sender in DLQ headers; ``producer_overrides`` go to kafka-python as they are.
    ``at_edge``: events come from outside, so their user ids become pseudonyms here when ``privacy.pseudonymize``
    is on (``streamrec.pseudonyms``), in what is published and in what goes to the DLQ; the stream job's own
    dead letters already carry them.
    """

    def __init__(self, settings: Settings, *, source: str = "sdk", at_edge: bool = True, **producer_overrides):
        cfg = settings.kafka
        # The producer first: with no broker it gives up within kafka.request_timeout_ms, the admin client after 30 s.
        self._producer = open_kafka_producer(cfg, **producer_overrides)
        try:
            ensure_topics(cfg)
        except BaseException:
            self._producer.close()
            raise
        self._topic = cfg.events_topic
        self._dlq_topic = cfg.dlq_topic
        self._max_bytes = settings.ingest.max_event_bytes
        self._max_skew_s = settings.ingest.max_future_skew_seconds
        self._source = source.encode("utf-8", "backslashreplace")
        self._pseudonym = pseudonymizer(settings) if at_edge and settings.privacy.pseudonymize else None
        self.accepted = 0
        self.rejected = 0
        self.reasons: Counter = Counter()
        self._failures: list[BaseException] = []
        self._on_failure = self._failures.append  # bound once: it is attached to every record

    def validate(self, raw: bytes | str | Mapping) -> Event:
        """``parse_event`` with the configured limits (``ingest.*``), its user pseudonymized; raises ``InvalidEvent``."""
        return self._hide(parse_event(raw, max_bytes=self._max_bytes, max_future_skew_s=self._max_skew_s))

    def send(self, raw: bytes | str | Mapping, *, where: str | None = None) -> Outcome:
        """Validate ``raw`` and publish it (or its rejection); ``where`` (e.g. "line 12") prefixes the DLQ detail."""
        try:
            # what self.validate does, without one more call per event
            event = parse_event(raw, max_bytes=self._max_bytes, max_future_skew_s=self._max_skew_s)
        except InvalidEvent as e:
            return self.reject(raw, e, where=where)
        return self.publish(self._hide(event))

    def publish(self, event: Event) -> Outcome:
        """Publish an event ``validate`` gave, canonically, keyed by its user."""
        future = self._send(self._topic, event.to_json_bytes(), key=event.user_id.encode())
        self.accepted += 1
        return Outcome(True, event, None, None, future)

    def reject(self, raw: bytes | str | Mapping, error: InvalidEvent, *, where: str | None = None) -> Outcome:
        """Send ``raw`` as it came to the DLQ, with why it was refused."""
        detail = f"{where}: {error.detail}" if where else error.detail
        try:
            value = as_bytes(raw)
        except InvalidEvent:
            value = repr(raw).encode("utf-8", "backslashreplace")  # not representable as JSON: keep what Python saw
        if self._pseudonym is not None:
            value = self._hide_raw(value)
        headers = [
            ("reason", error.reason.encode("utf-8")),
            ("detail", detail.encode("utf-8", "backslashreplace")),
            ("source", self._source),
        ]
        if len(value) > DLQ_VALUE_LIMIT:
            headers.append(("truncated_from", str(len(value)).encode("ascii")))
            value = value[:DLQ_VALUE_LIMIT]
        future = self._send(self._dlq_topic, value, headers=headers)
        self.rejected += 1
        self.reasons[error.reason] += 1
        return Outcome(False, None, error.reason, detail, future)

    def _hide(self, event: Event) -> Event:
        if self._pseudonym is None:
            return event
        return msgspec.structs.replace(event, user_id=self._pseudonym(event.user_id))

    def _hide_raw(self, value: bytes) -> bytes:
        """A refused event's bytes with a readable ``user_id`` pseudonymized; what is not a JSON object with one
        goes as it came (it names no user the pipeline could know)."""
        try:
            obj = json.loads(value)
        except (ValueError, RecursionError):
            return value
        if not isinstance(obj, dict) or not isinstance(obj.get("user_id"), str):
            return value
        assert self._pseudonym is not None
        obj["user_id"] = self._pseudonym(obj["user_id"])
        return json.dumps(obj, separators=(",", ":")).encode()

    def _send(self, topic: str, value: bytes, **kwargs) -> FutureRecordMetadata:
        if self._failures:
            self._raise_failures()
        try:
            future = self._producer.send(topic, value, **kwargs)
        except KafkaTimeoutError as e:  # no metadata for the topic within max_block_ms
            raise DeliveryError(str(e)) from None
        future.add_errback(self._on_failure)
        return future

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every record sent so far is acknowledged; raise ``DeliveryError`` if any failed."""
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            raise DeliveryError(f"records still unacknowledged after {timeout_s}s") from None
        if self._failures:
            self._raise_failures()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close()

    def discard(self) -> None:
        """Close without waiting, for a producer that failed and is being replaced: what it still holds
        is delivered or fails in the background (within ``delivery_timeout_ms``), unreported."""
        # kafka-python's close(timeout=0) still flushes first and raises while records are pending,
        # leaving the producer's thread running: the waiting close runs on a thread of its own.
        threading.Thread(target=self._producer.close, name="discard-producer", daemon=True).start()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.close()  # still delivers what was sent; the original error is the one to report

    def _raise_failures(self) -> None:
        # Reported once: a long-running caller (the HTTP app) answers with the error and carries on.
        count, first = len(self._failures), self._failures[0]
        self._failures.clear()
        raise DeliveryError(f"{count} record(s) were not delivered; first error: {first!r}")
