"""Exposures joined with what followed them in the event stream.

A click or watch of a shown item, at or after the exposure and within the outcome window, is that exposure's
outcome; when several exposures of the user showed the item within the window, the latest one before the event
takes it (the list the user was looking at), so an event counts once. Per exposure: which places were engaged,
the seconds watched of shown items, and NDCG at exposure with the engaged items as the relevant ones,

    NDCG = Σ_{engaged p} 1/log2(p + 1)  /  Σ_{j=1..m} 1/log2(j + 1),   m = the number engaged (0 when m = 0),

which is 1 when what the user took was at the top, and lower the further down they had to look.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from serving.experiments.exposure import Exposure
from streamrec.events import Event


@dataclass(frozen=True)
class Outcome:
    exposure: Exposure
    engaged: tuple[bool, ...]  # by position
    watch_seconds: float

    @property
    def clicked(self) -> bool:
        return any(self.engaged)

    @property
    def clicks(self) -> int:
        return sum(self.engaged)

    @property
    def ndcg(self) -> float:
        m = self.clicks
        if not m:
            return 0.0
        dcg = sum(1.0 / np.log2(p + 2) for p, e in enumerate(self.engaged) if e)
        return float(dcg / np.sum(1.0 / np.log2(np.arange(m) + 2)))


def join(exposures: Sequence[Exposure], events: Iterable[Event], window_ms: int) -> list[Outcome]:
    """Every exposure with its outcome (nothing engaged when no event followed)."""
    by_user: dict[str, list[Exposure]] = defaultdict(list)
    for e in sorted(exposures, key=lambda x: x.ts_ms):
        by_user[e.user_id].append(e)
    times = {u: [e.ts_ms for e in es] for u, es in by_user.items()}
    engaged = {e.exposure_id: [False] * len(e.items) for e in exposures}
    watched = dict.fromkeys(engaged, 0.0)
    for ev in events:
        shown = by_user.get(ev.user_id)
        if not shown:
            continue
        # The user's exposures at or before the event, latest first, back to the window's start.
        for n in range(bisect.bisect_right(times[ev.user_id], ev.ts_ms) - 1, -1, -1):
            exposure = shown[n]
            if ev.ts_ms - exposure.ts_ms >= window_ms:
                break
            place = next((s.position for s in exposure.items if s.item_id == ev.item_id), None)
            if place is not None:
                engaged[exposure.exposure_id][place - 1] = True
                if ev.event_type == "watch":
                    watched[exposure.exposure_id] += float(ev.watch_seconds or 0.0)
                break
    return [Outcome(e, tuple(engaged[e.exposure_id]), watched[e.exposure_id]) for e in exposures]
