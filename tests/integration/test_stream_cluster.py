"""The stream job past one machine: Spark's ``local-cluster`` master (executors in JVMs of their own, as on a
cluster), its checkpoint and offline session log at ``file://`` URIs (``spark.checkpoint_uri``,
``feast.offline_log_uri``), killed with -9 mid-stream and restarted.

The shared SparkSession is ``local[2]``, one per test session, so the job runs in subprocesses (``streamrec
stream``). The yardstick is the batch fold over the same log, as in ``test_stream_job``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil
import pyspark
import pytest

from features import stream_job
from features.store import FeatureStoreClient
from streams.replay import replay
from tests.fixtures.stream import assert_online_equals, expected_features, stream_env
from tests.helpers import assert_eventually

pytestmark = pytest.mark.integration

# Two executors of 1 core; 512 MiB each is plenty for a micro-batch of a few hundred records.
MASTER = "local-cluster[2,1,512]"


def test_kill_9_on_local_cluster_with_uri_locations_loses_and_doubles_nothing(stream_settings, world, tmp_path, spark_work_dirs):
    remote = tmp_path / "remote"  # stands in for a bucket: reached only through the URIs
    settings = dataclasses.replace(
        stream_settings,
        spark=dataclasses.replace(stream_settings.spark, master=MASTER, checkpoint_uri=f"file://{remote}/checkpoint"),
        feast=dataclasses.replace(stream_settings.feast, offline_log_uri=f"file://{remote}/session-log/"),
    )
    n = replay(settings, world / "events.jsonl", progress=False).sent
    paths = stream_job.StreamPaths.of(settings)
    env = stream_env(settings, master=MASTER, max_events_per_trigger=str(n // 8), trigger_seconds="0.5")  # several batches
    cli = [sys.executable, "-m", "streamrec.cli", "stream", "--catalog", str(world / "items.jsonl")]
    log = tmp_path / "job.log"
    job = subprocess.Popen(cli, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log.open("wb"))

    def batches_done() -> int:
        return len(stream_job.batch_ids(paths.stats))

    def two_batches_done() -> None:
        if job.poll() is not None:
            pytest.fail(f"stream job exited early ({job.returncode}):\n{log.read_text()[-3000:]}")
        assert batches_done() >= 2

    executors: list[psutil.Process] = []
    try:
        assert_eventually(two_batches_done, timeout_s=240, interval_s=0.1)
        executors = _executors(job.pid)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the driver, its JVM, the executors' JVMs and Python workers, mid-batch
        job.wait()
    assert batches_done() < 8, "the job finished before it could be killed; lower maxOffsetsPerTrigger"
    assert len(executors) == 2  # the batches ran on executor processes of their own
    assert_eventually(lambda: _gone(executors), timeout_s=30)

    caught_up = {**env, "STREAMREC_SPARK__MAX_EVENTS_PER_TRIGGER": "0"}  # no cap: the rest in one batch
    restart = subprocess.Popen([*cli, "--available-now"], env=caught_up, start_new_session=True, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = restart.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever outlived it (or a run past the timeout)
            os.killpg(restart.pid, signal.SIGKILL)
    assert restart.returncode == 0, err[-3000:]
    summary = json.loads(out[out.index("{"):])
    assert summary["duplicates"] == 0 and summary["dlq"] == 0
    expected = expected_features(world, settings)
    assert_online_equals(settings, expected)  # stream == batch, across the kill

    # Everything of the checkpoint and the offline log is at the URIs, nothing at the default places.
    assert {"offsets", "commits", "user-state", "fingerprints.json"} <= {p.name for p in (remote / "checkpoint").iterdir()}
    assert not (settings.data_path / "stream" / "checkpoint").exists()
    assert not (settings.data_path / "offline" / "user_session").exists()
    offline = pd.read_parquet(remote / "session-log")
    assert not offline.duplicated(["user_id", "event_timestamp"]).any()  # each batch's rows once
    assert offline.groupby("user_id")["events_total"].max().to_dict() == expected.set_index("user_id")["events_total"].to_dict()

    # Feast reads the log back there: just after each user's last event, the point-in-time join sees the final row.
    asked = pd.DataFrame({"user_id": expected["user_id"],
                          "event_timestamp": pd.to_datetime(expected["last_event_ts_ms"] + 1, unit="ms", utc=True)})
    joined = FeatureStoreClient(settings).training_set(asked, views=("session",))
    assert joined["events_total"].tolist() == expected["events_total"].tolist()


def _executors(pid: int) -> list[psutil.Process]:
    """The executor JVMs a job's process started (local-cluster's workers launch them as its children)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if any("CoarseGrainedExecutorBackend" in part for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _gone(processes: list[psutil.Process]) -> None:
    assert not [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def spark_work_dirs():
    """The executors' work dirs this test's jobs add to ``$SPARK_HOME/work`` (inside the venv), removed after it."""
    work = Path(pyspark.__file__).parent / "work"
    before = set(work.glob("app-*"))
    yield
    for app in set(work.glob("app-*")) - before:
        shutil.rmtree(app, ignore_errors=True)
