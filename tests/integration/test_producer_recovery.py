"""Every long-lived producer recovers when the broker comes back: HTTP ingest, the stream's features and DLQ.

Each test restarts a broker of its own (never the session's). The embedded broker keeps its topics and
producer ids across a restart; one that lost its data (``reset``: its data dir wiped, as a real broker
whose disk was replaced) no longer knows a producer's id, so an idempotent producer that lived through
that can never publish again: it has to be replaced.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
import uuid

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from features import stream_job
from infra import broker, process
from streamrec.config import FeastConfig, Settings
from streams.ingest_http import create_ingest_app
from streams.kafka_util import ensure_topics, read_topic
from streams.producer import DeliveryError
from tests.helpers import assert_eventually, bearer, free_port

pytestmark = pytest.mark.integration


def stop(settings: Settings) -> None:
    process.stop(broker.broker_service(settings))


def start(settings: Settings) -> None:
    process.start(broker.broker_service(settings))  # the same port and data dir


def reset(settings: Settings) -> None:
    """Restart the broker without its data: every topic and producer id gone (a plain restart keeps them)."""
    stop(settings)
    shutil.rmtree(settings.data_path / "broker")
    start(settings)


@pytest.fixture
def own_broker(tmp_path) -> Settings:
    """Settings on a broker of the test's own; a request the broker does not answer fails after 2 s."""
    settings = Settings(data_dir=str(tmp_path))
    settings.kafka.bootstrap_servers = f"127.0.0.1:{free_port()}"
    settings.kafka.request_timeout_ms = 2000
    start(settings)
    ensure_topics(settings.kafka)
    yield settings
    stop(settings)


def event(user: str = "u1") -> dict:
    return {"event_id": str(uuid.uuid4()), "event_type": "click", "user_id": user, "item_id": "i1",
            "ts": time.time_ns() // 1_000_000, "device": "tv", "session_id": "s1"}


def event_ids(settings: Settings) -> set[str]:
    return {json.loads(r.value)["event_id"] for r in read_topic(settings.kafka, settings.kafka.events_topic)}


def accepted_eventually(client: TestClient) -> dict:
    """An event POSTed and accepted, retrying until the app publishes again."""
    def accepted():
        e = event()
        assert client.post("/events", json=[e]).status_code == 200
        return e

    return assert_eventually(accepted, timeout_s=30)


@pytest.fixture
def ingest(own_broker):
    with TestClient(create_ingest_app(own_broker), headers=bearer(own_broker, "events:write", "ops:read")) as client:
        yield client


def test_ingest_replaces_its_producer_after_a_broker_restart(own_broker, ingest):
    assert ingest.post("/events", json=[event()]).status_code == 200
    reset(own_broker)

    # The producer's id is unknown to the new broker: that batch fails, its producer is replaced.
    lost = ingest.post("/events", json=[event()])
    assert lost.status_code == 503
    assert "retry it" in lost.json()["detail"]

    sent = accepted_eventually(ingest)
    assert sent["event_id"] in event_ids(own_broker)  # the topic the new producer found or made
    assert ingest.get("/healthz").json() == {"status": "ok", "accepted": 2, "rejected": 0}


def test_ingest_is_unhealthy_while_the_broker_is_away(own_broker, ingest):
    assert ingest.post("/events", json=[event()]).status_code == 200
    stop(own_broker)

    assert ingest.post("/events", json=[event()]).status_code == 503  # not acknowledged; no new producer opens
    health = ingest.get("/healthz")
    assert (health.status_code, health.json()) == (503, {"status": "unhealthy", "accepted": 1, "rejected": 0})
    away = ingest.post("/events", json=[event()])
    assert away.status_code == 503
    assert "the broker cannot be reached" in away.json()["detail"]

    start(own_broker)
    sent = accepted_eventually(ingest)
    health = ingest.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok", "accepted": 2, "rejected": 0})
    assert sent["event_id"] in event_ids(own_broker)


class Batch:
    """What the sink takes from Spark: a micro-batch it turns into Arrow (Spark itself is not needed here)."""

    def __init__(self, topic: str, values: list[bytes]):
        self.table = pa.table({
            "key": pa.array([None] * len(values), pa.binary()), "value": values,
            "topic": [topic] * len(values), "partition": [0] * len(values),
            "offset": list(range(len(values))),
            "timestamp": pa.array([time.time_ns() // 1000] * len(values), pa.timestamp("us")),
        })

    def toArrow(self) -> pa.Table:
        return self.table


def test_stream_sink_replaces_its_features_and_dlq_producers(own_broker, tmp_path):
    settings = dataclasses.replace(own_broker, feast=FeastConfig(online_store="sqlite"))
    cfg = settings.kafka
    catalog = tmp_path / "items.jsonl"
    catalog.write_text(json.dumps({"item_id": "i1", "title": "I1", "genres": ["action"], "duration_minutes": 90}) + "\n")
    sink = stream_job.open_sink(settings, catalog=catalog, echo=lambda *_: None)

    def published() -> tuple[set[str], set[bytes]]:
        users = {json.loads(r.value)["user_id"] for r in read_topic(cfg, cfg.features_topic)}
        return users, {r.value for r in read_topic(cfg, cfg.dlq_topic)}

    try:
        sink(Batch(cfg.events_topic, [json.dumps(event("u1")).encode(), b"not json"]), 0)
        assert published() == ({"u1"}, {b"not json"})

        # Both producers' ids are unknown to the new broker: each is replaced and its records sent again.
        reset(settings)
        sink(Batch(cfg.events_topic, [json.dumps(event("u2")).encode(), b"{}"]), 1)
        assert published() == ({"u2"}, {b"{}"})

        # Away longer than a request may wait: the batch fails. Back (its data kept): its replay is published.
        stop(settings)
        batch = Batch(cfg.events_topic, [json.dumps(event("u3")).encode(), b"[]"])
        with pytest.raises(DeliveryError):
            sink(batch, 2)
        start(settings)
        sink(batch, 2)
        assert published() == ({"u2", "u3"}, {b"{}", b"[]"})
    finally:
        sink.close()
