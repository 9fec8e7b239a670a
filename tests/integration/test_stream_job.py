"""The streaming feature job against the real broker, Spark local[2], Feast and Redis.

The yardstick is the batch fold (features.offline.compute_features) over the
same log: after the stream has seen the log, every user's online features must
equal it, whatever the micro-batching, duplicates, bad, late or poisonous records
or a kill -9. Redis is the online store (the embedded default); SQLite once.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter

import pandas as pd
import pytest
from kafka import KafkaProducer

from features import stream_job
from features.offline import compute_features
from features.store import FeatureStoreClient
from streamrec.catalog import load_items
from streams.kafka_util import read_topic
from streams.replay import replay
from tests.fixtures.stream import assert_online_equals, expected_features, run_stream, stream_env
from tests.helpers import assert_eventually

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_stream_equals_batch_with_duplicates_bad_and_late_events(spark, stream_settings, kafka_settings, world, store):
    settings = stream_settings if store == "redis" else dataclasses.replace(
        kafka_settings, feast=dataclasses.replace(kafka_settings.feast, online_store="sqlite"))
    log = world / "events.jsonl"
    first = replay(settings, log, progress=False)
    again = replay(settings, log, progress=False)  # the same event_ids once more
    n = first.sent
    assert again.sent == n

    # Records another producer could write straight to the topic, bypassing the SDK's checks.
    raw = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    topic = settings.kafka.events_topic
    bad = [b"{not json", json.dumps({"event_type": "click"}).encode(), "caf\xe9".encode("latin-1")]
    for value in bad:
        raw.send(topic, value)
    raw.flush()

    first = stream_job.run(settings, catalog=world / "items.jsonl", available_now=True, echo=lambda *_: None)
    assert first["invalid"] == len(bad)
    # The second copy: a duplicate while inside the user's watermark, late once behind it. None is folded twice.
    assert first["duplicates"] + first["late"] == n

    # A day behind its user's latest event, in a later batch: behind the watermark (within one batch,
    # events are taken in event-time order and the watermark is the one before the batch, as in Spark).
    first_event = json.loads(log.open().readline())
    late = {**first_event, "event_id": "00000000-0000-4000-8000-000000000001", "ts": first_event["ts"] - 86_400_000}
    raw.send(topic, json.dumps(late).encode(), key=late["user_id"].encode())
    raw.flush()
    summary = stream_job.run(settings, catalog=world / "items.jsonl", available_now=True, echo=lambda *_: None)
    assert summary["late"] == first["late"] + 1  # the job's totals, over both runs
    expected = expected_features(world, settings)
    assert_online_equals(settings, expected)
    published = {rec.key.decode() for rec in read_topic(settings.kafka, settings.kafka.features_topic)}
    assert published == set(expected["user_id"])  # the re-rank worker hears of every updated user

    dlq = Counter(dict(rec.headers)["reason"].decode() for rec in read_topic(settings.kafka, settings.kafka.dlq_topic))
    assert dlq["late_event"] == summary["late"]
    assert sum(v for k, v in dlq.items() if k != "late_event") == len(bad)
    assert {"not_json", "missing_field", "not_utf8"} <= set(dlq)


def test_kill_9_mid_stream_then_restart_loses_and_doubles_nothing(spark, stream_settings, world, tmp_path):
    settings = stream_settings
    n = replay(settings, world / "events.jsonl", progress=False).sent
    stats = stream_job.StreamPaths.of(settings).stats
    # several batches, so the kill lands mid-stream
    env = stream_env(settings, MAX_EVENTS_PER_TRIGGER=str(n // 8), TRIGGER_SECONDS="0.5")
    job = subprocess.Popen(
        [sys.executable, "-m", "streamrec.cli", "stream", "--catalog", str(world / "items.jsonl")],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=(tmp_path / "job.log").open("wb"),
    )

    def batches_done() -> int:
        return sum('"batch_id"' in line for line in stats.read_text().splitlines()) if stats.exists() else 0

    try:
        assert_eventually(lambda: _check(batches_done() >= 2, job, tmp_path), timeout_s=240, interval_s=0.1)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the driver, its JVM and Python workers, mid-batch
        job.wait()
    killed_after = batches_done()
    assert killed_after < 8, "the job finished before it could be killed; lower maxOffsetsPerTrigger"

    summary = stream_job.run(settings, catalog=world / "items.jsonl", available_now=True, echo=lambda *_: None)
    assert summary["duplicates"] == 0 and summary["dlq"] == 0
    assert_online_equals(settings, expected_features(world, settings))

    # The offline log holds each batch once: its rows per user add up to one row per update.
    offline = pd.read_parquet(settings.data_path / "offline" / "user_session")
    assert not offline.duplicated(["user_id", "event_timestamp"]).any()
    assert offline.groupby("user_id")["events_total"].max().to_dict() == expected_features(world, settings).set_index("user_id")["events_total"].to_dict()


def _check(done: bool, job: subprocess.Popen, tmp_path) -> bool:
    if job.poll() is not None:
        pytest.fail(f"stream job exited early ({job.returncode}):\n{(tmp_path / 'job.log').read_text()[-3000:]}")
    assert done
    return True


def _event(user, n, ts, item="i1", kind="click", **extra) -> dict:
    event = {"event_id": str(uuid.UUID(int=n)), "event_type": kind, "user_id": user, "item_id": item, "ts": ts,
             "device": "tv", "session_id": f"{user}-s", **extra}
    if kind == "watch":
        event.setdefault("watch_seconds", 600.0)
    return event


def _send_raw(settings, events: list[dict | bytes]) -> None:
    """Records as any Kafka client could write them, bypassing the SDK's validation."""
    raw = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for e in events:
        value = e if isinstance(e, bytes) else json.dumps(e).encode()
        key = None if isinstance(e, bytes) else e["user_id"].encode()
        raw.send(settings.kafka.events_topic, value, key=key)
    raw.flush()
    raw.close()


def _batch_fold(world, settings, events: list[dict]) -> pd.DataFrame:
    return compute_features([{**e, "ts_ms": e["ts"]} for e in events], load_items(world / "items.jsonl"), settings.features)


def test_late_event_inside_the_watermark_and_a_same_millisecond_event_change_the_row(spark, stream_settings, world):
    """Feast's own Redis write skips a row whose timestamp is not newer than the stored one: both of these
    updates keep the row's event_timestamp, and both must still land."""
    settings = stream_settings
    t = 1_700_000_000_000
    first = [_event("u-late", 1, t, "i1"), _event("u-late", 2, t + 5 * 60_000, "i2", "watch")]
    _send_raw(settings, first)
    run_stream(settings, world)
    assert_online_equals(settings, _batch_fold(world, settings, first))

    late = _event("u-late", 3, t + 60_000, "i3", "watch", watch_seconds=1200.0)  # 4 min behind, watermark 10 min
    same_ms = _event("u-late", 4, t + 5 * 60_000, "i4")  # the latest event's very millisecond
    _send_raw(settings, [late])
    summary = run_stream(settings, world)
    assert summary["late"] == 0
    _send_raw(settings, [same_ms])
    run_stream(settings, world)

    everything = [*first, late, same_ms]
    expected = _batch_fold(world, settings, everything)
    assert expected.loc[0, "events_total"] == 4 and expected.loc[0, "last_event_ts_ms"] == t + 5 * 60_000
    assert_online_equals(settings, expected)
    (row,) = FeatureStoreClient(settings).online_features(["u-late"])
    assert (row["events_total"], row["last_items"][:2]) == (4, ["i4", "i2"])


def test_poison_pill_pair_is_dead_lettered_and_the_job_keeps_going_across_restarts(spark, stream_settings, world):
    """Two watches of 1e308 s once overflowed the decayed sums, failed the state save and stopped the job on
    every restart. Now the contract refuses them (at most 24 h) and nothing stops the job."""
    settings = stream_settings
    t = 1_700_000_000_000
    poison = [_event("u-poison", n, t + n, "i1", "watch", watch_seconds=1e308) for n in (1, 2)]
    healthy = [_event(f"u{k}", 10 + k, t + k, f"i{k}") for k in range(5)]
    _send_raw(settings, [*poison, *healthy])
    first = run_stream(settings, world)
    more = [_event(f"u{k}", 20 + k, t + 60_000 + k, "i9", "watch") for k in range(5)]
    _send_raw(settings, more)
    second = run_stream(settings, world)  # a restart: the job starts again from its checkpoint

    assert first["dlq_by_reason"] == {"number_out_of_range": 2}
    assert second["events"] == first["events"] + len(more) == len(healthy) + len(more)
    assert_online_equals(settings, _batch_fold(world, settings, [*healthy, *more]))
    assert FeatureStoreClient(settings).online_features(["u-poison"])[0]["events_total"] is None
    dlq = [dict(rec.headers) for rec in read_topic(settings.kafka, settings.kafka.dlq_topic)]
    assert [h["reason"] for h in dlq] == [b"number_out_of_range"] * 2


def test_events_another_client_partitions_differently_are_judged_by_event_time(spark, stream_settings, world):
    """confluent-kafka's default partitioner (CRC32) puts a user's key elsewhere than the SDK (murmur2),
    and an unkeyed record goes anywhere: one user's events then sit on several partitions. Sent in time
    order, none may be dead-lettered as late (in Kafka order across partitions, 14 of 40 were)."""
    from confluent_kafka import Producer

    from streams.kafka_util import librdkafka_config
    from streams.producer import EventProducer

    settings = stream_settings
    t = 1_700_000_000_000
    # murmur2 puts u-mixed-1 on partition 3 of 4, CRC32 on 2
    mixed = [_event("u-mixed-1", 100 + n, t + n * 150_000, f"i{n}") for n in range(12)]
    unkeyed = [_event("u-unkeyed", 200 + n, t + n * 150_000, f"i{n}") for n in range(12)]
    other = Producer(librdkafka_config(settings.kafka))  # its defaults: consistent_random (CRC32) partitioner
    with EventProducer(settings, source="test") as sdk:
        for n, e in enumerate(mixed):
            if n % 2:
                other.produce(settings.kafka.events_topic, json.dumps(e).encode(), key=e["user_id"].encode())
            else:
                sdk.send(e)
    for n, e in enumerate(unkeyed):
        other.produce(settings.kafka.events_topic, json.dumps(e).encode(), partition=n % settings.kafka.partitions)
    assert other.flush(30) == 0
    sources = {(rec.partition, json.loads(rec.value)["user_id"]) for rec in read_topic(settings.kafka, settings.kafka.events_topic)}
    assert len({p for p, u in sources if u == "u-mixed-1"}) > 1, "the two partitioners agreed: no test"

    summary = run_stream(settings, world)
    assert summary["late"] == 0 and summary["dlq"] == 0
    assert_online_equals(settings, _batch_fold(world, settings, [*mixed, *unkeyed]))
