"""EventProducer against the real broker: keys, partitions and order kept; bad input in the DLQ, none lost."""
from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import defaultdict

import pytest

from infra import broker, process
from streamrec.config import Settings
from streamrec.events import parse_event
from streams.kafka_util import ensure_topics, read_topic
from streams.producer import DeliveryError, EventProducer
from tests.helpers import free_port


def make_event(user: str, n: int, **extra) -> dict:
    return {
        "event_id": str(uuid.uuid4()), "event_type": "watch", "user_id": user, "item_id": f"i{n}",
        "ts": time.time_ns() // 1_000_000 - 60_000 + n, "device": "tv", "session_id": f"{user}-s",
        "watch_seconds": float(n), **extra,
    }


def headers_of(record) -> dict:
    return {k: v.decode() for k, v in record.headers}


def test_round_trip_keeps_key_partition_and_order_per_user(kafka_settings):
    users = [f"user-{i}" for i in range(8)]
    sent = [make_event(users[n % len(users)], n) for n in range(200)]  # users interleaved
    with EventProducer(kafka_settings) as producer:
        outcomes = [producer.send(json.dumps(e).encode()) for e in sent]
    assert all(o.accepted for o in outcomes)
    assert (producer.accepted, producer.rejected) == (200, 0)

    records = list(read_topic(kafka_settings.kafka, kafka_settings.kafka.events_topic))
    assert len(records) == 200
    partitions, order = defaultdict(set), defaultdict(list)
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        value = json.loads(rec.value)
        assert rec.key == value["user_id"].encode()
        partitions[value["user_id"]].add(rec.partition)
        order[value["user_id"]].append(value["event_id"])
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert len(set().union(*partitions.values())) > 1  # 8 users spread over the topic's partitions
    for user in users:
        assert order[user] == [e["event_id"] for e in sent if e["user_id"] == user]


def test_valid_events_are_written_canonically(kafka_settings):
    event = make_event("u1", 1, ts="2020-01-01T00:00:00Z", context={"b": 1, "a": 2})
    with EventProducer(kafka_settings) as producer:
        outcome = producer.send(json.dumps(event, indent=2))  # text input, spaced out
    [rec] = read_topic(kafka_settings.kafka, kafka_settings.kafka.events_topic)
    assert rec.value == outcome.event.to_json_bytes()
    assert json.loads(rec.value)["ts"] == 1_577_836_800_000
    assert b" " not in rec.value and rec.value.index(b'"a"') < rec.value.index(b'"b"')


def test_bad_events_land_in_dlq_with_reason_and_original_bytes(kafka_settings):
    good = [json.dumps(make_event(f"u{n % 3}", n)).encode() for n in range(30)]
    bad = {
        b"not json at all": "not_json",
        b'{"event_id": "x"': "not_json",
        b"\xff\xfe garbage": "not_utf8",
        b"[]": "not_object",
        json.dumps(make_event("u1", 1, user_id=42)).encode(): "wrong_type",
        json.dumps(make_event("u1", 2, watch_seconds=-3)).encode(): "negative_watch_time",
        json.dumps(make_event("u1", 3, colour="red")).encode(): "unknown_field",
        json.dumps(make_event("u1", 4, event_type="click")).encode(): "unexpected_field",
        json.dumps(make_event("u1", 5, ts=4_102_444_800_000)).encode(): "future_timestamp",
    }
    stream = good[:10] + list(bad) + good[10:]
    with EventProducer(kafka_settings, source="test-suite") as producer:
        for raw in stream:
            producer.send(raw)
    assert (producer.accepted, producer.rejected) == (len(good), len(bad))
    assert sum(producer.reasons.values()) == len(bad)

    cfg = kafka_settings.kafka
    events = list(read_topic(cfg, cfg.events_topic))
    dlq = list(read_topic(cfg, cfg.dlq_topic))
    assert len(events) + len(dlq) == len(stream)  # nothing lost
    assert sorted(r.value for r in events) == sorted(parse_event(g).to_json_bytes() for g in good)
    assert {r.value: headers_of(r)["reason"] for r in dlq} == bad
    for rec in dlq:
        h = headers_of(rec)
        assert h["source"] == "test-suite"
        assert h["detail"]  # each says what is wrong ...
    details = {headers_of(r)["reason"]: headers_of(r)["detail"] for r in dlq}
    assert details["wrong_type"].startswith("user_id:")  # ... naming the field
    assert details["unknown_field"].startswith("colour:")


def test_mappings_are_validated_like_bytes(kafka_settings):
    with EventProducer(kafka_settings) as producer:
        ok = producer.send(make_event("u1", 1))
        no = producer.send({**make_event("u1", 2), "device": ""}, where="row 7")
    assert ok.accepted and not no.accepted
    assert (no.reason, no.detail) == ("empty_value", "row 7: device: must not be empty")
    [rec] = read_topic(kafka_settings.kafka, kafka_settings.kafka.dlq_topic)
    assert json.loads(rec.value)["device"] == ""
    assert headers_of(rec)["detail"] == "row 7: device: must not be empty"


def test_oversize_event_goes_to_dlq_whole(kafka_settings):
    settings = dataclasses.replace(kafka_settings, ingest=dataclasses.replace(kafka_settings.ingest, max_event_bytes=1000))
    raw = json.dumps(make_event("u1", 1, context={"pad": "x" * 5000})).encode()
    with EventProducer(settings) as producer:
        assert producer.send(raw).reason == "oversize"
    [rec] = read_topic(settings.kafka, settings.kafka.dlq_topic)
    assert rec.value == raw


@pytest.fixture
def doomed_broker(tmp_path) -> Settings:
    """A broker of the test's own, to be stopped under a live producer."""
    settings = Settings(data_dir=str(tmp_path))
    settings.kafka.bootstrap_servers = f"127.0.0.1:{free_port()}"
    settings.kafka.request_timeout_ms = 1000
    svc = broker.broker_service(settings)
    process.start(svc)
    ensure_topics(settings.kafka)
    yield settings
    process.stop(svc)


def test_delivery_failure_surfaces(doomed_broker):
    # undeliverable records fail after 2 s instead of the default 2 minutes
    producer = EventProducer(doomed_broker, delivery_timeout_ms=2000, linger_ms=0)
    producer.send(make_event("u1", 1))
    producer.flush()
    process.stop(broker.broker_service(doomed_broker))
    producer.send(make_event("u1", 2))
    with pytest.raises(DeliveryError, match="1 record"):
        producer.flush()
    producer.close()  # the failure was reported once; closing does not raise it again
