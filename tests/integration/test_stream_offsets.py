"""Offsets are never trusted blindly: a broker that lost its data and refilled past the checkpoint's
offsets stops the stream job with a clear error, and ``--reset-offsets`` resumes it without losing
the per-user state (issue 10: 25,393 of 25,983 refilled events were once skipped silently)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import uuid

import pandas as pd
import pytest

from features.stream_job import StreamPaths, batch_ids
from features.stream_reset import reset_offsets
from infra import broker, process
from streams.kafka_source import OffsetMismatchError
from streams.kafka_util import ensure_topics
from streams.replay import replay
from tests.fixtures.stream import assert_online_equals, expected_features, run_stream
from tests.helpers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(stream_settings, tmp_path):
    """Settings whose broker is the test's own, so the test can wipe it: (settings, restart_empty)."""
    home = dataclasses.replace(stream_settings, data_dir=str(tmp_path / "broker-home"))
    home.kafka = dataclasses.replace(stream_settings.kafka, bootstrap_servers=f"127.0.0.1:{free_port()}")
    svc = broker.broker_service(home)
    process.start(svc)

    def restart_empty() -> None:
        """What a memory-only broker does on restart, and a durable one that lost its disk."""
        process.stop(svc)
        shutil.rmtree(home.data_path / "broker", ignore_errors=True)
        process.start(svc)
        ensure_topics(home.kafka)

    settings = dataclasses.replace(stream_settings, kafka=home.kafka)
    ensure_topics(settings.kafka)
    yield settings, restart_empty
    process.stop(svc)


def _shifted(log, out, days: float, copy: int) -> None:
    """The log again, ``days`` later with new event ids: events the users make after the first ones."""
    with log.open() as src, out.open("a") as dst:
        for line in src:
            e = json.loads(line)
            e["event_id"] = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{copy}-{e['event_id']}"))
            e["ts"] += int(days * 86_400_000)
            dst.write(json.dumps(e) + "\n")


def test_a_refilled_topic_stops_the_job_and_reset_offsets_resumes_it_keeping_the_state(spark, own_broker, world, tmp_path):
    settings, restart_empty = own_broker
    log = world / "events.jsonl"
    n = replay(settings, log, progress=False).sent
    assert run_stream(settings, world)["events"] == n
    stats = StreamPaths.of(settings).stats
    batches = batch_ids(stats)

    # The broker forgets; producers refill each partition past the checkpoint's offsets (twice as much).
    restart_empty()
    later = tmp_path / "later.jsonl"
    _shifted(log, later, 2.0, 1)
    _shifted(log, later, 4.0, 2)
    assert replay(settings, later, progress=False).sent == 2 * n
    with pytest.raises(OffsetMismatchError) as stopped:
        run_stream(settings, world)
    message = str(stopped.value)
    assert f"{settings.kafka.events_topic}[" in message and "offset" in message
    assert "streamrec stream --reset-offsets earliest" in message and "--reset-offsets latest" in message
    assert batch_ids(stats) == batches  # stopped before any batch

    info = reset_offsets(settings, "earliest", echo=lambda *_: None)
    assert info["epoch"] == 1 and info["previous"]
    summary = run_stream(settings, world)
    assert summary["events"] == 2 * n and summary["late"] == 0 and summary["duplicates"] == 0

    # Every user's features: the first log then both refills, folded once each, as if nothing had happened.
    both = tmp_path / "all.jsonl"
    shutil.copy(log, both)
    with both.open("a") as f:
        f.write(later.read_text())
    expected = expected_features(world, settings, both)
    assert_online_equals(settings, expected)
    offline = pd.read_parquet(settings.data_path / "offline" / "user_session")
    assert not offline.duplicated(["user_id", "event_timestamp"]).any()  # the new epoch's batch ids named new files
    assert offline.groupby("user_id")["events_total"].max().to_dict() == expected.set_index("user_id")["events_total"].to_dict()

