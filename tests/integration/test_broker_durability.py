"""The embedded broker keeps what it acknowledged: all of it across a clean restart, all but the newest
records across kill -9 (it snapshots about every second). Each test restarts a broker of its own."""
from __future__ import annotations

import os
import signal
import time

import pytest

from infra import broker, process
from streamrec.config import Settings
from streams.kafka_util import admin_client, ensure_topics, read_topic
from streams.producer import open_kafka_producer
from tests.helpers import assert_eventually, free_port

N = 2_000


@pytest.fixture
def own_broker(tmp_path) -> Settings:
    settings = Settings(data_dir=str(tmp_path))
    settings.kafka.bootstrap_servers = f"127.0.0.1:{free_port()}"
    svc = broker.broker_service(settings)
    process.start(svc)
    ensure_topics(settings.kafka)
    yield settings
    process.stop(svc)


def publish(settings: Settings, first: int, count: int) -> dict[tuple[int, int], bytes]:
    """``count`` records, every one acknowledged (acks=all); (partition, offset) -> value."""
    cfg = settings.kafka
    producer = open_kafka_producer(cfg)
    try:
        futures = {
            f"record-{i}".encode(): producer.send(cfg.events_topic, key=f"user-{i % 50}".encode(), value=f"record-{i}".encode())
            for i in range(first, first + count)
        }
        producer.flush()
        acked = {}
        for value, future in futures.items():
            meta = future.get(timeout=0)
            acked[(meta.partition, meta.offset)] = value
        return acked
    finally:
        producer.close()


def stored(settings: Settings) -> dict[tuple[int, int], bytes]:
    return {(r.partition, r.offset): r.value for r in read_topic(settings.kafka, settings.kafka.events_topic)}


def topics(settings: Settings) -> set[str]:
    admin = admin_client(settings.kafka)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def pipeline_topics(settings: Settings) -> set[str]:
    cfg = settings.kafka
    return {cfg.events_topic, cfg.dlq_topic, cfg.features_topic}


def test_a_clean_restart_keeps_every_acknowledged_record(own_broker):
    acked = publish(own_broker, 0, N)  # the producer is closed first, as `infra down` does
    assert len(acked) == N
    svc = broker.broker_service(own_broker)
    assert process.stop(svc)
    process.start(svc)

    assert pipeline_topics(own_broker) <= topics(own_broker)  # the empty ones too
    assert stored(own_broker) == acked  # same offsets, same values


def test_kill_9_loses_at_most_the_newest_records(own_broker):
    old = publish(own_broker, 0, N)
    time.sleep(2.0)  # past the ~1 s snapshot interval: what a crash may lose is only newer
    new = publish(own_broker, N, N)
    svc = broker.broker_service(own_broker)
    os.kill(process.running_pid(svc), signal.SIGKILL)

    def dead():
        assert process.running_pid(svc) is None

    assert_eventually(dead, timeout_s=10)
    process.start(svc)

    assert pipeline_topics(own_broker) <= topics(own_broker)
    kept = stored(own_broker)
    assert old.items() <= kept.items()  # every old record, at its offset
    # Of the newest, each partition kept its oldest part: nothing out of place, no gaps.
    ends: dict[int, int] = {}
    for partition, offset in kept:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    assert kept == {(p, o): value for (p, o), value in {**old, **new}.items() if o < ends.get(p, 0)}
