"""The fault suite: the embedded stack as ops run it (``infra up``: broker, Redis, model server, the
supervised stream job, the API), events published while parts of it are killed and restarted.

After each fault, every user's online features must equal an independent recomputation from the
events the broker acknowledged (no event lost, none folded twice), the offline log must hold each
update once, and the API must have answered every request. The LLM is down throughout (its address
has no server): every answer says it fell back. Reduced for CI (a few hundred events per fault).
"""
from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx
import pandas as pd
import psutil
import pytest

from features.store import FeatureStoreClient
from features.stream_job import KILL_SWITCH_ENV, StreamPaths
from infra import process, stack, supervisor
from infra.apps import model_server_service, stream_service
from infra.broker import broker_service
from infra.redis import redis_service
from streamrec.config import load_settings
from streams.producer import EventProducer
from tests.fixtures.serving_stack import build_stack, write_stack_config
from tests.helpers import assert_eventually, bearer, free_port

CONVERGE_S = 240.0  # a restarted stream job: supervisor backoff + a cold Spark start on 2 busy cores


class Publisher:
    """Sends events for the stack's users through the SDK and keeps those the broker acknowledged."""

    def __init__(self, settings, users: list[str], items: list[str]):
        self.settings, self.users, self.items = settings, users, items
        self.acked: list[dict] = []
        self.rng = random.Random(7)

    def publish(self, n: int, per_flush: int = 25, pause_s: float = 0.02) -> None:
        with EventProducer(self.settings) as producer:
            for start in range(0, n, per_flush):
                chunk = [self._event() for _ in range(min(per_flush, n - start))]
                for event in chunk:
                    producer.send(event)
                producer.flush(30)  # raises unless every record of the chunk is acknowledged
                self.acked += chunk
                time.sleep(pause_s)

    def _event(self) -> dict:
        kind = self.rng.choice(["click", "click", "watch"])
        user = self.rng.choice(self.users)
        event = {"event_id": str(uuid.uuid4()), "event_type": kind, "user_id": user, "item_id": self.rng.choice(self.items),
                 "ts": int(time.time() * 1000), "device": "tv", "session_id": f"{user}-faults"}
        if kind == "watch":
            event["watch_seconds"] = float(self.rng.randint(60, 3600))
        return event


def recompute(events: list[dict], half_life_minutes: float, last_n: int) -> dict[str, dict]:
    """The suite's own fold, written from the feature definitions (not the project's fold): per user,
    the count, the latest time, decayed click and watch counts at it, the latest distinct items."""
    h = half_life_minutes * 60_000
    out: dict[str, dict] = {}
    for user in {e["user_id"] for e in events}:
        mine = [e for e in events if e["user_id"] == user]
        last = max(e["ts"] for e in mine)
        latest: dict[str, int] = {}
        for e in mine:
            latest[e["item_id"]] = max(latest.get(e["item_id"], -1), e["ts"])
        out[user] = {
            "events_total": len(mine),
            "last_event_ts_ms": last,
            "clicks_decayed": sum(math.exp2(-(last - e["ts"]) / h) for e in mine if e["event_type"] == "click"),
            "watches_decayed": sum(math.exp2(-(last - e["ts"]) / h) for e in mine if e["event_type"] == "watch"),
            "last_items": [i for i, _ in sorted(latest.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)][:last_n],
        }
    return out


class ApiWatch(threading.Thread):
    """Asks the API for a list every 0.5 s for the whole suite; keeps every outcome."""

    def __init__(self, settings, users: list[str]):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{settings.serving.port}/recommend"
        self.headers = bearer(settings, "recommend:any")
        self.users = users
        self.outcomes: list[tuple[float, int | str, list[str]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not self.halt.wait(0.5):
                n += 1
                try:
                    r = client.get(self.url, params={"user_id": self.users[n % len(self.users)], "k": 5}, headers=self.headers)
                    body = r.json() if r.status_code == 200 else {}
                    self.outcomes.append((time.time(), r.status_code, body.get("fallbacks", [])))
                except httpx.HTTPError as e:
                    self.outcomes.append((time.time(), type(e).__name__, []))

    def since(self, t: float) -> list[tuple[float, int | str, list[str]]]:
        return [o for o in self.outcomes if o[0] >= t]


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    data = tmp_path_factory.mktemp("faults")
    # Nothing listens at the LLM's address: it is down for the whole suite.
    config = write_stack_config(data, llm={"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "down",
                                           "budget_ms": 300})
    kill_switch = data / "kill-after-sink"
    mp = pytest.MonkeyPatch()
    mp.setenv("STREAMREC_CONFIG", str(config))  # the services infra starts read the same settings
    mp.setenv(KILL_SWITCH_ENV, str(kill_switch))
    settings = load_settings()
    try:
        stack.up(settings, only=["broker", "redis"], echo=lambda *_: None)
        built = build_stack(data, settings, live_features=False)
        stack.up(settings, only=["model-server", "stream", "api"], echo=lambda *_: None)
        items = sorted(built.item_ids)
        publisher = Publisher(settings, list(built.user_ids), items)
        api = ApiWatch(settings, list(built.user_ids))
        api.start()
        yield settings, publisher, api, kill_switch
        api.halt.set()
        api.join()
    finally:
        stack.down(settings, echo=lambda *_: None)
        mp.undo()


def assert_features_match(settings, publisher: Publisher) -> None:
    """Online rows equal the recomputation; the offline log holds each update once and ends there."""
    want = recompute(publisher.acked, settings.features.half_life_minutes, settings.features.last_n_items)
    got = {row["user_id"]: row for row in FeatureStoreClient(settings).online_features(sorted(want))}
    for user, expected in want.items():
        row = got[user]
        assert row["events_total"] == expected["events_total"], (user, row["events_total"], expected["events_total"])
        assert row["last_event_ts_ms"] == expected["last_event_ts_ms"], user
        assert list(row["last_items"]) == expected["last_items"], user
        for column in ("clicks_decayed", "watches_decayed"):
            assert math.isclose(row[column], expected[column], rel_tol=1e-5, abs_tol=1e-6), (user, column)
    # The stream job's files (the built world's history is backfilled beside them as batch-backfill-*).
    files = [p for p in (settings.data_path / "offline" / "user_session").glob("date=*/batch-*.parquet")
             if not p.name.startswith("batch-backfill-")]
    offline = pd.concat([pd.read_parquet(p) for p in files])
    assert not offline.duplicated(["user_id", "event_timestamp"]).any()
    assert offline.groupby("user_id")["events_total"].max().to_dict() == {u: e["events_total"] for u, e in want.items()}
    assert offline.sort_values(["user_id", "event_timestamp"]).groupby("user_id")["events_total"].is_monotonic_increasing.all()


def _child_pid(settings) -> int | None:
    return (supervisor.read_state(stream_service(settings).state_file) or {}).get("child_pid")


def _running_job(settings) -> int:
    """The stream job's pid once its query runs (the supervisor's child has written the heartbeat)."""
    def running() -> int:
        child, beat = _child_pid(settings), StreamPaths.of(settings).heartbeat
        assert child is not None and psutil.pid_exists(child)  # a kill -9 leaves the old heartbeat behind
        assert beat.exists() and beat.read_text().split()[0] == str(child)
        return child
    return assert_eventually(running, timeout_s=CONVERGE_S)


def eventually(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> None:
    """Wait until ``condition()`` is true (``assert_eventually`` retries failed assertions, not false values)."""
    def holds() -> None:
        assert condition()
    assert_eventually(holds, timeout_s=timeout_s, interval_s=interval_s)


def _kill_job(pid: int) -> None:
    """SIGKILL the stream job and everything it started (its JVM, Python workers), wherever they were."""
    job = psutil.Process(pid)
    for p in [job, *job.children(recursive=True)]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _converged(settings, publisher: Publisher) -> None:
    assert_eventually(lambda: assert_features_match(settings, publisher), timeout_s=CONVERGE_S, interval_s=1.0)


def _publish_in_background(publisher: Publisher, n: int) -> threading.Thread:
    thread = threading.Thread(target=publisher.publish, args=(n,), daemon=True)
    thread.start()
    return thread


def test_stream_job_kill_9_at_random_moments_and_between_sink_and_commit(faults):
    settings, publisher, _, kill_switch = faults
    publisher.publish(100)
    _converged(settings, publisher)
    rng = random.Random(11)
    for _ in range(2):
        child = _running_job(settings)
        sending = _publish_in_background(publisher, 150)
        time.sleep(rng.uniform(0.3, 3.0))
        _kill_job(child)
        sending.join()
        eventually(lambda killed=child: _child_pid(settings) not in (None, killed), timeout_s=120)
    # The sink has written the batch everywhere; Spark has not committed it: the replay must change nothing.
    child = _running_job(settings)
    kill_switch.touch()
    publisher.publish(50)
    eventually(lambda: not kill_switch.exists(), timeout_s=CONVERGE_S)
    eventually(lambda: _child_pid(settings) not in (None, child), timeout_s=120)
    _converged(settings, publisher)


def test_a_broker_outage_the_stream_job_does_not_outlive_then_a_clean_restart_lose_nothing(faults):
    settings, publisher, _, _ = faults
    publisher.publish(100)
    svc = broker_service(settings)
    restarts = (supervisor.read_state(stream_service(settings).state_file) or {}).get("restarts", 0)
    process.stop(svc)  # producers first, as `infra down` does: the broker's last snapshot has every ack
    # Down until the stream job has given up on it; its supervisor keeps restarting it meanwhile.
    eventually(lambda: supervisor.read_state(stream_service(settings).state_file)["restarts"] > restarts,
                      timeout_s=CONVERGE_S, interval_s=1.0)
    process.start(svc)
    publisher.publish(100)
    _converged(settings, publisher)
    assert supervisor.read_state(stream_service(settings).state_file)["state"] == "running"


def test_broker_kill_9_after_its_snapshot_loses_nothing(faults):
    settings, publisher, _, _ = faults
    publisher.publish(100)
    time.sleep(3.0)  # past the broker's ~1 s snapshot interval: what a crash may lose is only newer
    svc = broker_service(settings)
    os.kill(process.running_pid(svc), signal.SIGKILL)
    eventually(lambda: process.running_pid(svc) is None, timeout_s=10)  # gone, not just signalled
    process.start(svc)
    publisher.publish(100)
    _converged(settings, publisher)


def test_redis_restart_loses_nothing_and_the_api_keeps_answering(faults):
    settings, publisher, api, _ = faults
    svc = redis_service(settings)
    sending = _publish_in_background(publisher, 200)
    time.sleep(1.0)
    down_at = time.time()
    process.stop(svc)
    # A read of a Redis that is down fails after the client's retries (~4 s); the answer says so.
    eventually(lambda: any("features_unavailable" in f for _, _, f in api.since(down_at)), timeout_s=30)
    process.start(svc)
    up_at = time.time()
    sending.join()
    _converged(settings, publisher)
    eventually(lambda: any("features_unavailable" not in f for _, _, f in api.since(up_at)), timeout_s=60)
    during = api.since(down_at)
    assert all(status == 200 for _, status, _ in during), Counter(s for _, s, _ in during)


def test_model_server_restart_and_llm_down_degrade_with_flags(faults):
    settings, publisher, api, _ = faults
    svc = model_server_service(settings)
    down_at = time.time()
    process.stop(svc)
    eventually(lambda: any("model_unavailable" in f for _, _, f in api.since(down_at)), timeout_s=30)
    process.start(svc)
    up_at = time.time()
    eventually(lambda: any(s == 200 and "model_unavailable" not in f for _, s, f in api.since(up_at)), timeout_s=60)
    # The whole suite long: every request answered, each with the LLM's fallback named.
    statuses = Counter(status for _, status, _ in api.outcomes)
    assert set(statuses) == {200}, statuses
    assert all(any(f.startswith("rerank_") for f in fallbacks) for _, _, fallbacks in api.outcomes)
    publisher.publish(50)
    _converged(settings, publisher)

