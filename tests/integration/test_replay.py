"""Replaying a JSONL log: every event once to a fresh consumer group, bad lines to the DLQ, pacing by event time."""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import uuid

import pytest
from kafka import KafkaConsumer

from streamrec.errors import UserError
from streams import cli as streams_cli
from streams.kafka_util import client_options, read_topic
from streams.replay import Pacer, replay

START_MS = time.time_ns() // 1_000_000 - 3_600_000


def event_line(user: str, n: int) -> str:
    event = {
        "event_id": str(uuid.uuid4()), "event_type": "click", "user_id": user, "item_id": f"i{n}",
        "ts": START_MS + n * 1000, "device": "phone", "session_id": f"{user}-1",
    }
    return json.dumps(event)


@pytest.fixture
def log(tmp_path):
    """A hand-written log: 30 events of 3 users, one broken line, one invalid event, one blank line."""
    lines = [event_line(f"u{n % 3}", n) for n in range(30)]
    lines.insert(5, '{"event_id": broken')                               # line 6
    lines.insert(12, event_line("u1", 99).replace('"click"', '"buy"'))   # line 13
    lines.insert(20, "   ")                                              # line 21
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def consume_as_group(settings, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    """Read ``topic`` with a new consumer group, as the stream job would, until ``expected`` records came."""
    consumer = KafkaConsumer(
        topic,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka.session_timeout_ms,
        **client_options(settings.kafka),
    )
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        records.extend(r for batch in consumer.poll(timeout_ms=1000).values() for r in batch)  # any extra
    finally:
        consumer.close()
    return records


def test_replay_delivers_every_event_once_and_bad_lines_to_dlq(kafka_settings, log):
    stats = replay(kafka_settings, log, progress=False)
    assert (stats.sent, stats.rejected, stats.blank_lines) == (30, 2, 1)
    assert stats.reasons == {"not_json": 1, "unknown_event_type": 1}

    records = consume_as_group(kafka_settings, kafka_settings.kafka.events_topic, expected=30)
    ids = [json.loads(r.value)["event_id"] for r in records]
    logged = [json.loads(line)["event_id"] for line in log.read_text().splitlines()
              if line.strip() and '"click"' in line]
    assert sorted(ids) == sorted(logged)  # each exactly once

    for user in ("u0", "u1", "u2"):  # file order per user
        mine = [r for r in records if r.key == user.encode()]
        assert [json.loads(r.value)["ts"] for r in mine] == sorted(json.loads(r.value)["ts"] for r in mine)

    dlq = {dict(r.headers)["detail"].decode(): r.value for r in read_topic(kafka_settings.kafka, kafka_settings.kafka.dlq_topic)}
    assert len(dlq) == 2
    [broken] = [v for d, v in dlq.items() if d.startswith("line 6: ")]
    assert broken == b'{"event_id": broken'
    assert any(d.startswith("line 13: event_type: 'buy'") for d in dlq)


def test_replaying_twice_publishes_the_same_event_ids_again(kafka_settings, log):
    replay(kafka_settings, log, progress=False)
    replay(kafka_settings, log, progress=False)
    values = [json.loads(r.value)["event_id"] for r in read_topic(kafka_settings.kafka, kafka_settings.kafka.events_topic)]
    assert len(values) == 60 and len(set(values)) == 30


def test_paced_replay_keeps_order_and_delivers_all(kafka_settings, log):
    stats = replay(kafka_settings, log, speed=1000.0, progress=False)  # 1 s apart in event time -> 1 ms
    assert stats.sent == 30
    records = list(read_topic(kafka_settings.kafka, kafka_settings.kafka.events_topic))
    assert len(records) == 30
    for partition in {r.partition for r in records}:  # read_topic yields each partition in offset order
        ts = [json.loads(r.value)["ts"] for r in records if r.partition == partition]
        assert ts == sorted(ts)


def test_pacer_waits_for_event_time_over_speed():
    now, slept = [100.0], []

    def sleep(s):
        slept.append(round(s, 6))
        now[0] += s

    pacer = Pacer(10.0, clock=lambda: now[0], sleep=sleep)
    pacer.wait(1_000_000)   # first event: sets the origin
    pacer.wait(1_010_000)   # 10 s later in event time -> 1 s at speed 10
    now[0] += 5.0           # the sender fell 5 s behind ...
    pacer.wait(1_020_000)   # ... so the next one is already overdue: no wait
    pacer.wait(1_000_000)   # earlier than the origin (out of order): sent at once
    pacer.wait(1_080_000)   # due 8 s after the origin; 6 s have passed
    assert slept == [1.0, 2.0]


@pytest.mark.parametrize("speed", [0, -2.0])
def test_speed_must_be_positive(kafka_settings, log, speed):
    with pytest.raises(UserError, match="positive"):
        replay(kafka_settings, log, speed=speed, progress=False)


def test_missing_log_is_a_clear_error(kafka_settings, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        replay(kafka_settings, tmp_path / "nope.jsonl", progress=False)


def test_produce_command_reads_stdin(kafka_settings, log, monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    streams_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["produce", "-", "--quiet"])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(log.read_bytes())))
    assert args.func(args, kafka_settings) == 0
    assert "sent 30, rejected 2 to the DLQ (not_json 1, unknown_event_type 1), skipped 1 blank line(s)" in capsys.readouterr().out
    [source] = {dict(r.headers)["source"] for r in read_topic(kafka_settings.kafka, kafka_settings.kafka.dlq_topic)}
    assert source == b"produce:stdin"
