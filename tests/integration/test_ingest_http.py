"""POST /events against the real broker: an answer per event, rejected ones in the DLQ byte for byte."""
from __future__ import annotations

import json
import select
import socket
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from streams.ingest_http import MAX_BATCH_EVENTS, create_ingest_app, split_json_array
from streams.kafka_util import read_topic
from tests.helpers import bearer, raw_request, serving


def event(user: str = "u1", **changes) -> dict:
    base = {
        "event_id": str(uuid.uuid4()), "event_type": "click", "user_id": user, "item_id": "i1",
        "ts": time.time_ns() // 1_000_000, "device": "tv", "session_id": "s1",
    }
    return {**base, **changes}


@pytest.fixture
def client(kafka_settings):
    with TestClient(create_ingest_app(kafka_settings), headers=bearer(kafka_settings, "events:write", "ops:read")) as c:
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
        [b'{"event_id": "nope",  "user_id": "u3"}', b"42", split_json_array(body.encode())[4]]
    )  # each element's own text, spacing included
    assert {dict(r.headers)["source"] for r in dlq} == {b"http"}

    health = client.get("/healthz").json()
    assert health == {"status": "ok", "accepted": 2, "rejected": 3}


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"event_id": "x"}', "body must be a JSON array of events: Expected `array`, got `object`"),
        (b"[{}, ", "body must be a JSON array of events: Input data was truncated"),
        (b"[1] [2]", "trailing characters"),
        (b"[1,]", "trailing comma in array (byte 3)"),
        (b"", "Input data was truncated"),
        (b'["\xff"]', "body is not UTF-8 (invalid byte at 2)"),
        # the probe's: it answered 500 (RecursionError)
        (b"[" * 100_000 + b"]" * 100_000, "it nests too deeply"),
        (b"[" + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]", "it nests too deeply"),
    ],
)
def test_body_that_is_not_an_array_is_a_400(client, kafka_settings, body, message):
    resp = client.post("/events", content=body)
    assert resp.status_code == 400
    assert message in resp.json()["detail"]
    cfg = kafka_settings.kafka
    assert list(read_topic(cfg, cfg.dlq_topic)) == []  # a refused body is the caller's to fix, not DLQ'd


def test_too_big_a_batch_is_a_413(client):
    resp = client.post("/events", json=[event() for _ in range(MAX_BATCH_EVENTS + 1)])
    assert resp.status_code == 413
    assert f"send at most {MAX_BATCH_EVENTS}" in resp.json()["detail"]


def test_an_element_nested_too_deeply_is_rejected_alone(client, kafka_settings):
    deep = b'{"context": ' + b"[" * 300 + b"]" * 300 + b"}"  # past the validator's bound, within the body's
    resp = client.post("/events", content=b"[" + json.dumps(event()).encode() + b"," + deep + b"]")
    assert resp.status_code == 200
    assert [(r["status"], r.get("reason")) for r in resp.json()["results"]] == [("accepted", None), ("rejected", "not_json")]
    cfg = kafka_settings.kafka
    assert [r.value for r in read_topic(cfg, cfg.dlq_topic)] == [deep]


def test_a_huge_body_is_refused_without_reading_it(kafka_settings):
    limit = kafka_settings.ingest.max_body_bytes
    app = create_ingest_app(kafka_settings)
    token = bearer(kafka_settings, "events:write")["Authorization"]
    with serving(app) as (host, port), socket.create_connection((host, port)) as sock:
        # Chunked, so no Content-Length gives the size away: only counting what is read can stop it.
        sock.sendall(f"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"%x\r\n%s\r\n" % (1 << 16, b" " * (1 << 16))
        sent = 0
        sock.settimeout(10)
        while sent < 100 << 20 and not select.select([sock], [], [], 0)[0]:  # the probe's 100 MB
            try:
                sock.sendall(chunk)
            except OSError:  # the server closed the connection after answering
                break
            sent += 1 << 16
        answer = sock.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 413") and f"more than {limit} bytes" in answer
        assert sent < limit + (16 << 20)  # what the socket buffers held past the cap, not 100 MB
        declared = raw_request(host, port, f"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
                                           f"Content-Length: {100 << 20}\r\n\r\n[]")
    assert declared.startswith("HTTP/1.1 413") and f"is {100 << 20} bytes" in declared


def test_a_long_query_gets_a_clear_414(kafka_settings):
    with serving(create_ingest_app(kafka_settings)) as (host, port):
        answer = raw_request(host, port, f"GET /healthz?q={'x' * 100_000} HTTP/1.1\r\nHost: x\r\n\r\n")  # the probe's 100 KB
    assert answer.startswith("HTTP/1.1 414") and "the query string is 100002 bytes, at most 8192" in answer


def test_writing_needs_an_events_write_token(kafka_settings):
    with TestClient(create_ingest_app(kafka_settings)) as anonymous:
        resp = anonymous.post("/events", json=[event("victim")])
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert "missing bearer token" in resp.json()["detail"]
        forged = bearer(kafka_settings, "events:write") | {}
        other_secret = forged["Authorization"][:-4] + "AAAA"
        assert anonymous.post("/events", json=[event("victim")],
                              headers={"Authorization": other_secret}).status_code == 401
        reader = bearer(kafka_settings, "recommend:read", user="victim")
        resp = anonymous.post("/events", json=[event("victim")], headers=reader)
        assert resp.status_code == 403 and "events:write" in resp.json()["detail"]
        # public health says only ok: no counters, no topic names
        assert anonymous.get("/healthz").json() == {"status": "ok"}
    cfg = kafka_settings.kafka
    assert list(read_topic(cfg, cfg.events_topic)) == [] and list(read_topic(cfg, cfg.dlq_topic)) == []


def test_empty_batch_is_fine(client):
    assert client.post("/events", json=[]).json() == {"accepted": 0, "rejected": 0, "results": []}


def test_the_web_page_may_publish_from_its_origin_and_no_other(client, kafka_settings):
    """The recommend API's page (another port: another origin) gets CORS answers; other sites get none."""
    page = f"http://127.0.0.1:{kafka_settings.serving.port}"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    ok = client.options("/events", headers={"Origin": page, **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == page
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    evil = client.options("/events", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in evil.headers
    posted = client.post("/events", json=[event()], headers={"Origin": page})
    assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == page
