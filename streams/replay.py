"""Publish a recorded JSONL event log (a file, or stdin as ``-``) through the validating producer.

Lines go out in file order, so each user's events keep their order. A line that
is not a valid event goes to the DLQ with its line number, like any bad event.
Replaying a log twice publishes the same event_ids again: dropping duplicates is
the stream job's work, not the publisher's.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from streamrec.config import Settings
from streamrec.errors import UserError
from streamrec.events import InvalidEvent
from streams.producer import EventProducer


@dataclass
class ReplayStats:
    sent: int = 0
    rejected: int = 0
    blank_lines: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        why = ", ".join(f"{r} {n}" for r, n in sorted(self.reasons.items()))
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (
            f"sent {self.sent}, rejected {self.rejected} to the DLQ{f' ({why})' if why else ''}"
            f"{f', skipped {self.blank_lines} blank line(s)' if self.blank_lines else ''}"
            f" in {self.seconds:.1f}s ({rate:,.0f} events/s)"
        )


class Pacer:
    """Holds events back so that their spacing in event time, divided by ``speed``, is kept in wall time."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if not speed > 0:
            raise UserError(f"--speed must be a positive factor (10 = ten times faster), got {speed}")
        self._speed = speed
        self._clock = clock
        self._sleep = sleep
        self._start: tuple[int, float] | None = None

    def wait(self, ts_ms: int) -> None:
        now = self._clock()
        if self._start is None:
            self._start = (ts_ms, now)
            return
        first_ts_ms, first_wall = self._start
        # An event earlier than its predecessors (out-of-order log) gives a negative delay: sent at once.
        delay = first_wall + (ts_ms - first_ts_ms) / 1000.0 / self._speed - now
        if delay > 0:
            self._sleep(delay)


def _open_log(log_path: str | Path) -> tuple[AbstractContextManager[BinaryIO], int | None, str]:
    """(binary stream, size in bytes if known, name for messages)."""
    if str(log_path) == "-":
        return nullcontext(sys.stdin.buffer), None, "stdin"
    path = Path(log_path)
    if not path.is_file():
        raise UserError(f"event log {path} does not exist or is not a file")
    return open(path, "rb"), path.stat().st_size, path.name


def replay(
    settings: Settings,
    log_path: str | Path,
    *,
    speed: float | None = None,
    progress: bool = True,
    source: str = "replay",
) -> ReplayStats:
    """Publish every line of ``log_path``: as fast as possible (``speed=None``), or with the gaps between
    event times kept, divided by ``speed``."""
    pacer = Pacer(speed) if speed is not None else None
    stream, size, name = _open_log(log_path)
    stats = ReplayStats()
    started = time.monotonic()
    with stream as lines, EventProducer(settings, source=f"{source}:{name}") as producer, tqdm(
        total=size, unit="B", unit_scale=True, desc=name, disable=not progress
    ) as bar:
        for number, line in enumerate(lines, 1):
            bar.update(len(line))
            line = line.rstrip(b"\r\n")
            if not line.strip():
                stats.blank_lines += 1  # a separator, not an event
                continue
            try:
                event = producer.validate(line)
            except InvalidEvent as e:
                producer.reject(line, e, where=f"line {number}")
                continue
            if pacer is not None:
                pacer.wait(event.ts_ms)
            producer.publish(event)
        producer.flush()
    stats.sent, stats.rejected = producer.accepted, producer.rejected
    stats.reasons = dict(producer.reasons)
    stats.seconds = time.monotonic() - started
    return stats
