"""Exponential time decay on event time.

A weight w added at event time t is worth w * 2^(-(T - t) / h) when read at a
later time T (h: half-life). The vector is kept as its value at a reference
time, the latest event time seen, so every factor computed here is 2^(-x) with
x >= 0: nothing is ever scaled up, so long-idle users cannot overflow.

Because a decayed sum is a plain sum of decayed terms, the result does not
depend on the order events arrive in (up to float rounding), which is what
lets late events inside the watermark be folded in exactly.
"""
from __future__ import annotations

import math

import numpy as np


def decay_factor(elapsed_ms: float, half_life_ms: float) -> float:
    """2^(-elapsed / half-life); a negative elapsed time is an error, since reads never amplify."""
    if elapsed_ms < 0:
        raise ValueError(f"elapsed time must be >= 0, got {elapsed_ms} ms")
    if not half_life_ms > 0:
        raise ValueError(f"half-life must be > 0, got {half_life_ms} ms")
    return math.exp2(-elapsed_ms / half_life_ms)


class DecayedVector:
    """A vector of decayed sums sharing one reference time (the latest event time added).

    The half-life is passed to each call rather than stored: it is configuration,
    and the serialized state should only hold data.
    """

    __slots__ = ("values", "ref_ms")

    def __init__(self, size: int, values=None, ref_ms: int | None = None):
        self.values = np.zeros(size) if values is None else np.array(values, dtype=np.float64)
        if self.values.shape != (size,):
            raise ValueError(f"expected {size} values, got shape {self.values.shape}")
        self.ref_ms = ref_ms

    def add(self, ts_ms: int, delta: np.ndarray, half_life_ms: float) -> None:
        """Add ``delta`` as of event time ``ts_ms``; an event older than the reference is decayed to it."""
        if self.ref_ms is None or ts_ms >= self.ref_ms:
            if self.ref_ms is not None and ts_ms > self.ref_ms:
                self.values *= decay_factor(ts_ms - self.ref_ms, half_life_ms)
            self.values += delta
            self.ref_ms = ts_ms
        else:
            self.values += delta * decay_factor(self.ref_ms - ts_ms, half_life_ms)

    def value_at(self, ts_ms: int, half_life_ms: float) -> np.ndarray:
        """The vector as read at ``ts_ms`` (not before the reference time: later events are already in it)."""
        if self.ref_ms is None:
            return np.zeros_like(self.values)
        return self.values * decay_factor(ts_ms - self.ref_ms, half_life_ms)
