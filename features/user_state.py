"""Per-user feature state: the fold of one user's events into the features the models read.

The streaming job keeps one ``UserState`` per user (as ``to_json()`` text in Spark's
state store) and calls ``apply`` with each micro-batch's events; ``features.offline``
runs the same fold over a whole log, so online and offline features agree.

Folding a time-sorted sequence in any split into consecutive batches gives an
identical state. A late event (older than the latest one seen) is handled so:
- decayed sums and ``events_total``: exact, as if it had arrived in order (up to float rounding);
- ``last_items``: exact too, the list is the N distinct items with the latest
  (event time, item_id), which does not depend on arrival order;
- ``prev_gap_s``: exact (it only needs the two latest times);
- current session: joins it if no more than the session gap before its start (moving
  the start back); older events belong to a forgotten session and are ignored;
- session id, device and local time: those of the latest event, so unchanged.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping

import numpy as np

from features.context import GENRE_INDEX, GENRE_SLUGS, GENRES, daypart, is_weekend, local_time
from features.decay import DecayedVector, decay_factor
from features.sessions import Session
from streamrec.config import FeatureConfig

# Decayed quantities share one reference time, so they live in one vector: genres, then totals.
_WATCH_TIME, _CLICKS, _WATCHES = len(GENRES), len(GENRES) + 1, len(GENRES) + 2
_DECAYED_SIZE = len(GENRES) + 3
DECAYED_COLUMNS: tuple[str, ...] = tuple(f"aff_{s}" for s in GENRE_SLUGS) + (
    "watch_time_decayed", "clicks_decayed", "watches_decayed",
)

# The feature row; the Feast feature view and the models use these names.
FEATURE_COLUMNS: dict[str, type] = {
    "user_id": str,
    "event_timestamp": datetime,
    **{c: float for c in DECAYED_COLUMNS},
    "events_total": int,
    "session_id": str,
    "session_events": int,
    "session_length_s": float,
    "last_device": str,
    "local_hour": int,
    "daypart": str,
    "is_weekend": int,
    "last_items": list[str],
    "last_event_ts_ms": int,
    "prev_gap_s": float,
}

_STATE_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def watch_fraction(watch_seconds: float, duration_minutes: float | None) -> float:
    """Share of the item watched, in [0, 1]; an unknown duration counts an hour as a full watch."""
    if duration_minutes is not None and duration_minutes > 0:  # NaN (pandas' missing) fails > 0 too
        return min(max(watch_seconds / (duration_minutes * 60.0), 0.0), 1.0)
    return min(watch_seconds / 3600.0, 1.0)


def event_delta(event: Mapping, click_weight: float) -> np.ndarray:
    """What one event adds to the decayed vector, before decay.

    The weight is split equally over the item's genres; names outside GENRES
    (e.g. MovieLens' "unknown") carry none.
    """
    delta = np.zeros(_DECAYED_SIZE)
    kind = event["event_type"]
    if kind == "click":
        weight = click_weight
        delta[_CLICKS] = 1.0
    elif kind == "watch":
        seconds = event.get("watch_seconds")
        if seconds is None or not seconds >= 0:
            raise ValueError(f"event {event['event_id']}: watch needs watch_seconds >= 0, got {seconds!r}")
        weight = watch_fraction(seconds, event.get("duration_minutes"))
        delta[_WATCH_TIME] = seconds
        delta[_WATCHES] = 1.0
    else:
        raise ValueError(f"event {event['event_id']}: unknown event_type {kind!r}")
    names = event.get("genres")  # a list, a numpy array (from pandas/Arrow) or None
    genres = {GENRE_INDEX[g] for g in (() if names is None else names) if g in GENRE_INDEX}
    for g in genres:  # scalar stores: fancy indexing costs more on 1-3 genres
        delta[g] = weight / len(genres)
    return delta


def event_order(event: Mapping) -> tuple:
    """The fold order: event time, then event_id so equal times still order the same everywhere."""
    return int(event["ts_ms"]), str(event["event_id"])


class UserState:
    __slots__ = (
        "decayed", "events_total", "last_items", "session", "session_id",
        "last_device", "last_ts_ms", "prev_ts_ms", "local_hour", "weekend",
    )

    def __init__(self) -> None:
        self.decayed = DecayedVector(_DECAYED_SIZE)
        self.events_total = 0
        self.last_items: list[list] = []  # [item_id, latest ts_ms], latest first
        self.session: Session | None = None
        self.session_id: str | None = None
        self.last_device: str | None = None
        self.last_ts_ms: int | None = None
        self.prev_ts_ms: int | None = None
        # Local time of the latest event, kept so feature_row needs no config.
        self.local_hour: int | None = None
        self.weekend: bool | None = None

    def apply(self, events: Iterable[Mapping], cfg: FeatureConfig) -> None:
        """Fold events (dicts of the event contract plus the item's ``genres`` and ``duration_minutes``)."""
        half_life_ms = cfg.half_life_minutes * 60_000.0
        gap_ms = cfg.session_gap_minutes * 60_000.0
        ordered = sorted(events, key=event_order)
        for event in ordered:
            self._fold(event, half_life_ms, gap_ms, cfg)
        if ordered:
            local = local_time(self.last_ts_ms, cfg.timezone)
            self.local_hour, self.weekend = local.hour, is_weekend(local)

    def _fold(self, event: Mapping, half_life_ms: float, gap_ms: float, cfg: FeatureConfig) -> None:
        ts = int(event["ts_ms"])
        self.decayed.add(ts, event_delta(event, cfg.click_weight), half_life_ms)
        self.events_total += 1
        self._remember_item(str(event["item_id"]), ts, cfg.last_n_items)
        if self.session is None:
            self.session = Session(ts, ts)
        else:
            self.session.add(ts, gap_ms)
        if self.last_ts_ms is None or ts >= self.last_ts_ms:
            self.prev_ts_ms, self.last_ts_ms = self.last_ts_ms, ts
            self.session_id, self.last_device = str(event["session_id"]), str(event["device"])
        elif self.prev_ts_ms is None or ts > self.prev_ts_ms:
            self.prev_ts_ms = ts

    def _remember_item(self, item_id: str, ts: int, n: int) -> None:
        items = self.last_items
        for i, (seen_id, seen_ts) in enumerate(items):
            if seen_id == item_id:
                if seen_ts >= ts:
                    return
                del items[i]
                break
        key = (ts, item_id)
        pos = next((i for i, (seen_id, seen_ts) in enumerate(items) if (seen_ts, seen_id) < key), len(items))
        items.insert(pos, [item_id, ts])
        del items[n:]

    def feature_row(self, user_id: str) -> dict:
        """The features as of the latest event; columns and types as in FEATURE_COLUMNS."""
        if self.last_ts_ms is None:
            raise ValueError("no events folded yet")
        decayed = dict(zip(DECAYED_COLUMNS, self.decayed.values.tolist()))
        return {
            "user_id": user_id,
            "event_timestamp": _EPOCH + timedelta(milliseconds=self.last_ts_ms),
            **decayed,
            "events_total": self.events_total,
            "session_id": self.session_id,
            "session_events": self.session.count,
            "session_length_s": self.session.length_ms / 1000.0,
            "last_device": self.last_device,
            "local_hour": self.local_hour,
            "daypart": daypart(self.local_hour),
            "is_weekend": int(self.weekend),
            "last_items": [item_id for item_id, _ in self.last_items],
            "last_event_ts_ms": self.last_ts_ms,
            "prev_gap_s": 0.0 if self.prev_ts_ms is None else (self.last_ts_ms - self.prev_ts_ms) / 1000.0,
        }

    def to_json(self) -> str:
        # json writes floats with repr, which round-trips exactly.
        session = None if self.session is None else [self.session.start_ms, self.session.count]
        return json.dumps({
            "v": _STATE_VERSION, "ts": self.last_ts_ms, "prev_ts": self.prev_ts_ms,
            "decayed": self.decayed.values.tolist(), "events": self.events_total, "items": self.last_items,
            "session": session, "session_id": self.session_id, "device": self.last_device,
            "hour": self.local_hour, "weekend": self.weekend,
        }, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> UserState:
        data = json.loads(text)
        if data.get("v") != _STATE_VERSION:
            raise ValueError(f"unsupported user state version {data.get('v')!r}")
        state = cls()
        state.last_ts_ms, state.prev_ts_ms = data["ts"], data["prev_ts"]
        state.decayed = DecayedVector(_DECAYED_SIZE, data["decayed"], state.last_ts_ms)
        state.events_total, state.last_items = data["events"], data["items"]
        if data["session"] is not None:
            start_ms, count = data["session"]
            state.session = Session(start_ms, state.last_ts_ms, count)
        state.session_id, state.last_device = data["session_id"], data["device"]
        state.local_hour, state.weekend = data["hour"], data["weekend"]
        return state


def decay_features_to(row: Mapping, now_ms: int, cfg: FeatureConfig) -> dict:
    """A stored feature row aged to serving time ``now_ms``, plus ``time_since_last_event_s``.

    Events may be stamped slightly ahead of the server clock (the ingest allows some skew),
    so a ``now_ms`` before the latest event ages nothing rather than failing.
    """
    elapsed_ms = max(int(now_ms) - int(row["last_event_ts_ms"]), 0)
    factor = decay_factor(elapsed_ms, cfg.half_life_minutes * 60_000.0)
    aged = dict(row)
    for column in DECAYED_COLUMNS:
        aged[column] = float(row[column]) * factor
    aged["time_since_last_event_s"] = elapsed_ms / 1000.0
    return aged
