"""Small Kafka plumbing shared by the producer, replay, the Spark source and infra.

Written for any Kafka-protocol broker. Two gaps of Tansu (the embedded broker before noida-db) shape it: ``end_offsets``
answers wrongly there, so the high watermark comes from a fetch response; and
topics cannot grow partitions, so they are created with their full count up front.
"""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

from confluent_kafka import Producer
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from streamrec.addresses import LOOPBACK, host_port
from streamrec.config import KafkaConfig
from streamrec.errors import UserError

KAFKA_PORT = 9092


def single_local_broker(cfg: KafkaConfig) -> bool:
    """One broker, on this machine: the embedded one (`infra up` runs it), not a cluster."""
    servers = cfg.bootstrap_servers.split(",")
    return len(servers) == 1 and host_port(servers[0], KAFKA_PORT)[0] in LOOPBACK


def any_broker_listening(cfg: KafkaConfig, timeout_s: float = 1.0) -> bool:
    """A bootstrap address accepts a TCP connection: checked before a client that would retry for ~30 s without one
    (a background thread that must stay quick to stop)."""
    for server in cfg.bootstrap_servers.split(","):
        try:
            socket.create_connection(host_port(server, KAFKA_PORT), timeout=timeout_s).close()
            return True
        except OSError:
            continue
    return False


def client_options(cfg: KafkaConfig) -> dict:
    """Options every kafka-python client gets: servers plus pass-through security settings."""
    return {"bootstrap_servers": cfg.bootstrap_servers.split(","), **cfg.client_options}


# kafka-python option names whose librdkafka name differs (the rest are the same words with dots).
_LIBRDKAFKA_NAMES = {
    "sasl_plain_username": "sasl.username", "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location", "ssl_password": "ssl.key.password",
}


# librdkafka logs every failed reconnect to stderr; what matters to its callers surfaces as a
# delivery or message error with a clear message, so its own lines are not shown.
LIBRDKAFKA_LOG = logging.getLogger("streamrec.librdkafka")
LIBRDKAFKA_LOG.addHandler(logging.NullHandler())
LIBRDKAFKA_LOG.propagate = False


def librdkafka_config(cfg: KafkaConfig, client_options: dict | None = None) -> dict:
    """The same connection for a confluent-kafka (librdkafka) client, where the stream job needs C speed:
    servers plus ``kafka.client_options`` (kafka-python names, or ``client_options`` given) translated."""
    config = {"bootstrap.servers": cfg.bootstrap_servers}
    for name, value in (cfg.client_options if client_options is None else client_options).items():
        config[_LIBRDKAFKA_NAMES.get(name, name.replace("_", "."))] = value
    return config


def keyed_producer(cfg: KafkaConfig, **config) -> Producer:
    """A librdkafka producer for records keyed by user: it never blocks a caller (sends are queued and retried in
    its own thread, the broker found when it answers), and keys hash with murmur2 as Kafka's Java client and the
    SDK do, so a user's records share a partition with the user's events."""
    return Producer({**librdkafka_config(cfg), "partitioner": "murmur2_random", "enable.idempotence": True,
                     "acks": "all", **config}, logger=LIBRDKAFKA_LOG)


class BrokerUnavailable(UserError):
    """No broker answers, or it does not know a topic yet: may pass (a restart), unlike a bad setting."""


def admin_client(cfg: KafkaConfig, timeout_s: float = 10.0) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(request_timeout_ms=int(timeout_s * 1000), **client_options(cfg))
    except KafkaTimeoutError:
        raise BrokerUnavailable(
            f"no Kafka broker answers at {cfg.bootstrap_servers} (start the embedded one with 'streamrec infra up')"
        ) from None


def ensure_topics(cfg: KafkaConfig, topics: list[str] | None = None) -> list[str]:
    """Create the pipeline's topics if missing; returns the names created."""
    topics = topics or [cfg.events_topic, cfg.dlq_topic, cfg.features_topic, cfg.catalog_topic, cfg.catalog_dlq_topic,
                        cfg.exposures_topic, cfg.deletions_topic]
    admin = admin_client(cfg)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        created = []
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, cfg.partitions, cfg.replication_factor)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process won the race
        return created
    finally:
        admin.close()


def partitions_of(consumer: KafkaConsumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The topic's partition ids, waiting briefly for metadata."""
    deadline = time.monotonic() + timeout_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"topic {topic!r} does not exist (create it with 'streamrec infra up')")
        consumer.topics()  # forces a metadata refresh
        time.sleep(0.1)


def assigned_consumer(cfg: KafkaConfig, **extra) -> KafkaConsumer:
    """A group-less consumer for assign/seek reads (no coordinator round trips)."""
    opts = {
        "enable_auto_commit": False,
        "group_id": None,
        "consumer_timeout_ms": 1000,
        "request_timeout_ms": cfg.request_timeout_ms,
        **client_options(cfg),
        **extra,
    }
    try:
        return KafkaConsumer(**opts)
    except KafkaTimeoutError:
        raise BrokerUnavailable(f"no Kafka broker answers at {cfg.bootstrap_servers}") from None


def high_watermarks(consumer: KafkaConsumer, tps: list[TopicPartition], timeout_s: float = 10.0) -> dict[TopicPartition, int]:
    """Latest offsets taken from fetch responses (correct on every broker tried, Tansu included).

    Seeks each partition to its beginning and polls once so every partition
    has had a fetch response; kafka-python then reports its high watermark.
    The consumer's assignment is restored to ``tps``; positions are not.
    """
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    deadline = time.monotonic() + timeout_s
    marks: dict[TopicPartition, int] = {}
    while len(marks) < len(tps):
        consumer.poll(timeout_ms=200, max_records=1, update_offsets=False)
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None:
                marks[tp] = hw
        if time.monotonic() > deadline:
            raise KafkaError(f"no fetch response for {sorted(set(tps) - set(marks))} within {timeout_s}s")
    return marks


def records_at(cfg: KafkaConfig, wanted: dict[TopicPartition, int], timeout_s: float = 10.0) -> tuple[dict, dict, dict]:
    """The record at each wanted offset (None where the partition holds none there), with the partitions'
    earliest and latest offsets: ``(records, earliest, latest)``."""
    consumer = assigned_consumer(cfg)
    try:
        tps = sorted(wanted)
        begins = consumer.beginning_offsets(tps)
        ends = high_watermarks(consumer, tps)
        found: dict = dict.fromkeys(tps)
        pending = {tp for tp in tps if begins[tp] <= wanted[tp] < ends[tp]}
        consumer.assign(sorted(pending))
        for tp in pending:
            consumer.seek(tp, wanted[tp])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise KafkaError(f"no records fetched from {sorted(pending)} within {timeout_s}s")
            for tp, records in consumer.poll(timeout_ms=200).items():
                if tp in pending and records:
                    found[tp] = records[0] if records[0].offset == wanted[tp] else None
                    pending.discard(tp)
                    consumer.pause(tp)
        return found, begins, ends
    finally:
        consumer.close()


def read_topic(cfg: KafkaConfig, topic: str, timeout_s: float = 30.0) -> Iterator:
    """Every record now in ``topic``, partition by partition, up to the current high watermark."""
    consumer = assigned_consumer(cfg)
    try:
        tps = [TopicPartition(topic, p) for p in partitions_of(consumer, topic)]
        ends = high_watermarks(consumer, tps)
        for tp in tps:
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            deadline = time.monotonic() + timeout_s
            while consumer.position(tp) < ends[tp]:
                if time.monotonic() > deadline:
                    raise KafkaError(f"{tp}: stuck at {consumer.position(tp)} of {ends[tp]}")
                for records in consumer.poll(timeout_ms=500).values():
                    for rec in records:
                        if rec.offset < ends[tp]:
                            yield rec
    finally:
        consumer.close()


class TopicFollower:
    """A topic read from its beginning without a consumer group, so every reader (each API replica, the stream
    job) sees every record in the same order; ``poll`` gives the records since the last call."""

    def __init__(self, cfg: KafkaConfig, topic: str):
        self.topic = topic
        self._consumer = assigned_consumer(cfg)
        self._tps = [TopicPartition(topic, p) for p in partitions_of(self._consumer, topic)]
        self._consumer.assign(self._tps)
        self._consumer.seek_to_beginning(*self._tps)

    def poll(self, timeout_s: float = 0.0) -> list:
        """Waits up to ``timeout_s`` for a first record, then takes what follows until a poll comes back empty."""
        out = []
        batch = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        while batch:
            for records in batch.values():
                out.extend(records)
            batch = self._consumer.poll(timeout_ms=50)
        return out

    def close(self) -> None:
        try:
            self._consumer.close()
        except KafkaError:  # closing a consumer whose broker is gone: nothing left to release
            pass

