"""The streaming feature job against the real broker, Spark local[2] and Feast.

The yardstick is the batch fold (features.offline.compute_features) over the
same log: after the stream has seen the log, every user's online features must
equal it, whatever the micro-batching, duplicates, bad records or a kill -9.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from kafka import KafkaProducer

from features.offline import compute_features, load_items, read_event_log
from features.store import FeatureStoreClient
from features.user_state import FEATURE_COLUMNS
from features import stream_job
from streams.generator import generate_world
from streams.kafka_util import read_topic
from streams.replay import replay
from tests.helpers import assert_eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(out, users=25, items=120, days=1.0, seed=11)
    return out


def expected_features(world, settings) -> pd.DataFrame:
    return compute_features(read_event_log(world / "events.jsonl"), load_items(world / "items.jsonl"), settings.features)


def assert_online_equals(settings, expected: pd.DataFrame) -> None:
    got = pd.DataFrame(FeatureStoreClient(settings).online_features(list(expected["user_id"])))
    assert len(got) == len(expected)
    for column, kind in FEATURE_COLUMNS.items():
        if column == "event_timestamp":
            continue
        want, have = expected[column].tolist(), got[column].tolist()
        if kind is float:  # the online store keeps float32
            np.testing.assert_allclose(np.array(have, dtype=float), np.array(want, dtype=float), rtol=1e-5, atol=1e-9, err_msg=column)
        else:
            assert [list(v) if kind is list else v for v in have] == want, column


def test_stream_equals_batch_with_duplicates_bad_and_late_events(spark, kafka_settings, world):
    settings = kafka_settings
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
    first_event = json.loads(log.open().readline())
    late = {**first_event, "event_id": "00000000-0000-4000-8000-000000000001", "ts": first_event["ts"] - 86_400_000}
    raw.send(topic, json.dumps(late).encode(), key=late["user_id"].encode())
    raw.flush()

    summary = stream_job.run(settings, catalog=world / "items.jsonl", available_now=True, echo=lambda *_: None)

    assert summary["invalid"] == len(bad)
    # The second copy: a duplicate while inside the user's watermark, late once behind it. None is folded twice.
    assert summary["duplicates"] + summary["late"] == n + 1
    assert summary["late"] >= 1
    expected = expected_features(world, settings)
    assert_online_equals(settings, expected)
    published = {rec.key.decode() for rec in read_topic(settings.kafka, settings.kafka.features_topic)}
    assert published == set(expected["user_id"])  # the re-rank worker hears of every updated user

    dlq = Counter(dict(rec.headers)["reason"].decode() for rec in read_topic(settings.kafka, settings.kafka.dlq_topic))
    assert dlq["late_event"] == summary["late"]
    assert sum(v for k, v in dlq.items() if k != "late_event") == len(bad)
    assert {"not_json", "missing_field", "not_utf8"} <= set(dlq)


def test_kill_9_mid_stream_then_restart_loses_and_doubles_nothing(spark, kafka_settings, world, tmp_path):
    settings = kafka_settings
    n = replay(settings, world / "events.jsonl", progress=False).sent
    stats = stream_job.StreamPaths.of(settings).stats
    env = {
        **os.environ,
        "STREAMREC_DATA_DIR": settings.data_dir,
        "STREAMREC_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMREC_KAFKA__EVENTS_TOPIC": settings.kafka.events_topic,
        "STREAMREC_KAFKA__DLQ_TOPIC": settings.kafka.dlq_topic,
        "STREAMREC_SPARK__MAX_EVENTS_PER_TRIGGER": str(n // 8),  # several batches, so the kill lands mid-stream
        "STREAMREC_SPARK__TRIGGER_SECONDS": "0.5",
    }
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
