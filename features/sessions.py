"""Gap-based sessionization: a new session starts when the gap to the previous event exceeds the session gap.

A gap exactly equal to the session gap stays in the same session.
``sessionize`` splits a whole sorted sequence; ``Session`` is the incremental
form the per-user state keeps (only the current session is remembered).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SessionSplit:
    """Per event: ``index`` (0-based session number). Per session: first/last timestamp and event count."""

    index: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    count: np.ndarray

    @property
    def length_ms(self) -> np.ndarray:
        return self.end_ms - self.start_ms


def sessionize(ts_ms: Sequence[int], gap_ms: float) -> SessionSplit:
    ts = np.asarray(ts_ms, dtype=np.int64)
    if len(ts) == 0:
        return SessionSplit(index=ts.copy(), start_ms=ts.copy(), end_ms=ts.copy(), count=ts.copy())
    gaps = np.diff(ts)
    if np.any(gaps < 0):
        raise ValueError("timestamps must be sorted ascending")
    starts_new = np.concatenate(([True], gaps > gap_ms))
    firsts = np.flatnonzero(starts_new)
    lasts = np.append(firsts[1:] - 1, len(ts) - 1)
    return SessionSplit(
        index=np.cumsum(starts_new) - 1, start_ms=ts[firsts], end_ms=ts[lasts], count=lasts - firsts + 1
    )


@dataclass(slots=True)
class Session:
    """The current session of one user: first and last event time, event count."""

    start_ms: int
    last_ms: int
    count: int = 1

    @property
    def length_ms(self) -> int:
        return self.last_ms - self.start_ms

    def add(self, ts_ms: int, gap_ms: float) -> None:
        """Fold one event in.

        In order (ts >= last): extend, or start a new session after a gap > ``gap_ms``.
        Late (ts < last): it joins if it is within ``gap_ms`` before the start (moving the start
        back) or inside the span; otherwise it belongs to an earlier session, which is not
        tracked, and is ignored.
        """
        if ts_ms >= self.last_ms:
            if ts_ms - self.last_ms > gap_ms:
                self.start_ms, self.count = ts_ms, 0
            self.last_ms = ts_ms
        elif self.start_ms - ts_ms > gap_ms:
            return
        else:
            self.start_ms = min(self.start_ms, ts_ms)
        self.count += 1
