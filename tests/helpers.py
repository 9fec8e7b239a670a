"""Helpers for tests against live services."""
from __future__ import annotations

import socket
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def assert_eventually(check: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.2) -> T:
    """Retry ``check`` (which raises AssertionError until it holds) until it passes or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
