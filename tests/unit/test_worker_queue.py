"""The refresh worker's queue: newest row per user, oldest user first, a time budget per poll."""
from __future__ import annotations

import json
import time

from serving import worker as worker_module
from serving.metrics import RerankMetrics, ServingMetrics
from serving.worker import RefreshWorker
from streamrec.config import Settings


class Recording(RefreshWorker):
    def __init__(self, seconds_per_row: float = 0.0):
        super().__init__(Settings(), pipeline=None, reranker=None, metrics=ServingMetrics(RerankMetrics()))
        self.handled: list[tuple[str, int]] = []
        self.seconds_per_row = seconds_per_row

    def handle(self, row: dict) -> str:
        time.sleep(self.seconds_per_row)
        self.handled.append((row["user_id"], row["last_event_ts_ms"]))
        return "applied"


def row(user: str, ts: int) -> bytes:
    return json.dumps({"user_id": user, "last_event_ts_ms": ts}).encode()


def skips(worker: RefreshWorker, reason: str) -> float:
    return worker.metrics.worker_skips.labels(reason)._value.get()


def test_a_users_newest_row_is_refreshed_once_in_the_users_first_place():
    w = Recording()
    for value in (row("a", 1), row("b", 1), b"not json", row("a", 2), row("c", 1)):
        w.add(value)
    w.drain(time.monotonic() + 5)
    assert w.handled == [("a", 2), ("b", 1), ("c", 1)]
    assert (skips(w, "superseded"), skips(w, "invalid")) == (1, 1)


def test_the_budget_leaves_the_rest_waiting_for_the_next_round():
    w = Recording(seconds_per_row=0.2)
    for n in range(10):
        w.add(row(f"u{n}", n))
    w.drain(time.monotonic() + 0.5)
    assert 2 <= len(w.handled) <= 4
    w.drain(time.monotonic() + 5)
    assert [u for u, _ in w.handled] == [f"u{n}" for n in range(10)]


def test_beyond_the_cap_the_longest_waiting_are_dropped(monkeypatch):
    monkeypatch.setattr(worker_module, "MAX_WAITING_USERS", 3)
    w = Recording()
    for n in range(5):
        w.add(row(f"u{n}", n))
    w.drain(time.monotonic() + 5)
    assert [u for u, _ in w.handled] == ["u2", "u3", "u4"] and skips(w, "dropped") == 2


def test_a_tombstone_drops_the_deleted_users_waiting_row():
    w = Recording()
    w.add(row("a", 1))
    w.add(row("b", 1))
    w.add(None, b"a")  # `streamrec privacy delete-user a`
    w.drain(time.monotonic() + 5)
    assert w.handled == [("b", 1)] and skips(w, "deleted") == 1
