"""POST /events against the real broker: an answer per event, rejected ones in the DLQ byte for byte."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from streams.ingest_http import MAX_BATCH_EVENTS, create_ingest_app, split_json_array
from streams.kafka_util import read_topic


def event(user: str = "u1", **changes) -> dict:
    base = {
        "event_id": str(uuid.uuid4()), "event_type": "click", "user_id": user, "item_id": "i1",
        "ts": time.time_ns() // 1_000_000, "device": "tv", "session_id": "s1",
    }
    return {**base, **changes}


@pytest.fixture
def client(kafka_settings):
    with TestClient(create_ingest_app(kafka_settings)) as c:
        yield c


def test_batch_answers_per_event(client, kafka_settings):
    good = [event("u1"), event("u2", event_type="watch", watch_seconds=30)]
    body = (
        "[\n  " + json.dumps(good[0]) + ",\n"
        '  {"event_id": "nope",  "user_id": "u3"},\n'
        "  " + json.dumps(good[1]) + ",\n"
        "  42,\n"
        "  " + json.dumps(event(watch_seconds=5)) + "\n]"
    )
    resp = client.post("/events", content=body.encode(), headers={"content-type": "application/json"})
    assert resp.status_code == 200
    out = resp.json()
    assert (out["accepted"], out["rejected"]) == (2, 3)
    statuses = [(r["index"], r["status"], r.get("reason")) for r in out["results"]]
    assert statuses == [
        (0, "accepted", None),
        (1, "rejected", "missing_field"),
        (2, "accepted", None),
        (3, "rejected", "not_object"),
        (4, "rejected", "unexpected_field"),
    ]
    assert out["results"][1]["detail"].startswith("device, event_type, item_id, session_id, ts")

    cfg = kafka_settings.kafka
    assert sorted(json.loads(r.value)["event_id"] for r in read_topic(cfg, cfg.events_topic)) == sorted(
        e["event_id"] for e in good
    )
    dlq = list(read_topic(cfg, cfg.dlq_topic))
    assert sorted(r.value for r in dlq) == sorted(
        [b'{"event_id": "nope",  "user_id": "u3"}', b"42", split_json_array(body)[4].encode()]
    )  # each element's own text, spacing included
    assert {dict(r.headers)["source"] for r in dlq} == {b"http"}

    health = client.get("/healthz").json()
    assert health == {"status": "ok", "accepted": 2, "rejected": 3}


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"event_id": "x"}', "body must be a JSON array of events: expected a JSON array"),
        (b"[{}, ", "body must be a JSON array of events: element 1: Expecting value"),
        (b"[1] [2]", "unexpected data after the array"),
        (b"[1,]", "element 1: Expecting value"),
        (b"", "expected a JSON array"),
        (b'["\xff"]', "body is not UTF-8 (invalid byte at 2)"),
    ],
)
def test_body_that_is_not_an_array_is_a_400(client, kafka_settings, body, message):
    resp = client.post("/events", content=body)
    assert resp.status_code == 400
    assert message in resp.json()["error"]
    cfg = kafka_settings.kafka
    assert list(read_topic(cfg, cfg.dlq_topic)) == []  # a refused body is the caller's to fix, not DLQ'd


def test_too_big_a_batch_is_a_413(client):
    resp = client.post("/events", json=[event() for _ in range(MAX_BATCH_EVENTS + 1)])
    assert resp.status_code == 413
    assert f"send at most {MAX_BATCH_EVENTS}" in resp.json()["error"]


def test_empty_batch_is_fine(client):
    assert client.post("/events", json=[]).json() == {"accepted": 0, "rejected": 0, "results": []}
