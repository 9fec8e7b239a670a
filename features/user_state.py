"""Per-user feature state: the fold of users' events into the features the models read.

``fold_users`` is the one fold. The streaming job calls it once per micro-batch with
every updated user's stored ``UserState`` (``to_json()`` text in its state store);
``features.offline`` calls it over a whole log, so online and offline features agree.
It costs per batch, not per user: the decayed sums of all users are one numpy
expression (``features.decay.fold_decayed``); what stays per event is a few integer
comparisons (session, last items, latest two times). ``UserState.apply`` is the same
fold for one user.

Folding a time-sorted sequence in any split into consecutive batches gives the
same state (decayed sums up to float rounding; the same batches from the same
state give a bit-identical one, which is what a replayed micro-batch needs). A late event (older than the latest one seen) is handled so:
- decayed sums and ``events_total``: exact, as if it had arrived in order (up to float rounding);
- ``last_items``: exact too, the list is the N distinct items with the latest
  (event time, item_id), which does not depend on arrival order;
- ``prev_gap_s``: exact (it only needs the two latest times);
- current session: joins it if no more than the session gap before its start (moving
  the start back); older events belong to a forgotten session and are ignored;
- session id, device and local time: those of the latest event, so unchanged;
- ``recent`` (the live user vector's input, ``features.user_vector``): exact, the RECENT_INTERACTIONS events
  with the latest (event time, item_id, weight), which does not depend on arrival order either.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec
import numpy as np

from features.decay import decay_factor, fold_decayed
from features.sessions import Session
from features.user_vector import RECENT_INTERACTIONS, FoldIn
from streamrec.config import FeatureConfig
from streamrec.vocabulary import GENRE_INDEX, GENRE_SLUGS, GENRES, daypart, is_weekend, local_time

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
    # The live retrieval vector (None without trained item factors or a known item) and the factors' version.
    "user_vector": list[float],
    "user_vector_model": str,
}

_STATE_VERSION = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def watch_fraction(watch_seconds: float, duration_minutes: float | None) -> float:
    """Share of the item watched, in [0, 1]; an unknown duration counts an hour as a full watch."""
    if duration_minutes is not None and duration_minutes > 0:  # NaN (pandas' missing) fails > 0 too
        return min(max(watch_seconds / (duration_minutes * 60.0), 0.0), 1.0)
    return min(watch_seconds / 3600.0, 1.0)


def _add_delta(out: np.ndarray, event: Mapping, click_weight: float) -> float:
    """Add what one event adds to the decayed sums, before decay, into ``out`` (length _DECAYED_SIZE);
    returns the event's weight (the watched fraction, or ``click_weight`` for a click).

    The weight is split equally over the item's genres; names outside GENRES
    (e.g. MovieLens' "unknown") carry none.
    """
    kind = event["event_type"]
    if kind == "click":
        weight = click_weight
        out[_CLICKS] += 1.0
    elif kind == "watch":
        seconds = event.get("watch_seconds")
        if seconds is None or not seconds >= 0:
            raise ValueError(f"event {event['event_id']}: watch needs watch_seconds >= 0, got {seconds!r}")
        weight = watch_fraction(seconds, event.get("duration_minutes"))
        out[_WATCH_TIME] += seconds
        out[_WATCHES] += 1.0
    else:
        raise ValueError(f"event {event['event_id']}: unknown event_type {kind!r}")
    names = event.get("genres")  # a list, a numpy array (from pandas/Arrow) or None
    genres = {GENRE_INDEX[g] for g in (() if names is None else names) if g in GENRE_INDEX}
    for g in genres:  # scalar stores: fancy indexing costs more on 1-3 genres
        out[g] += weight / len(genres)
    return weight


def event_delta(event: Mapping, click_weight: float) -> np.ndarray:
    """What one event adds to the decayed vector, before decay."""
    delta = np.zeros(_DECAYED_SIZE)
    _add_delta(delta, event, click_weight)
    return delta


def event_order(event: Mapping) -> tuple:
    """The fold order: event time, then event_id so equal times still order the same everywhere."""
    return int(event["ts_ms"]), str(event["event_id"])


class _Stored(msgspec.Struct, array_like=True):
    """A UserState as stored: a compact JSON array (msgspec: ~20x cheaper than json for this)."""

    v: int
    ts: int | None
    prev_ts: int | None
    decayed: list[float]
    events: int
    items: list[list]
    session: tuple[int, int] | None
    session_id: str | None
    device: str | None
    hour: int | None
    weekend: bool | None
    recent: list[list] = []  # absent in states stored before live user vectors


_encode_state = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(_Stored).decode


class UserState:
    __slots__ = (
        "decayed", "events_total", "last_items", "session", "session_id",
        "last_device", "last_ts_ms", "prev_ts_ms", "local_hour", "weekend", "recent",
    )

    def __init__(self) -> None:
        self.decayed = np.zeros(_DECAYED_SIZE)  # as of last_ts_ms
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
        self.recent: list[list] = []  # [ts_ms, item_id, weight] of the latest events, latest first

    def apply(self, events: Iterable[Mapping], cfg: FeatureConfig) -> None:
        """Fold one user's events (dicts of the event contract plus the item's ``genres`` and ``duration_minutes``)."""
        events = list(events)
        if events:
            error = fold_users([(self, events)], cfg)[0]
            if error is not None:
                raise ValueError(error)

    def _fold_scalars(self, ordered: Sequence[Mapping], weights: Sequence[float], gap_ms: float, n_items: int) -> None:
        """The order-dependent part of the fold, events in fold order (decayed sums are done in bulk)."""
        session, last, prev = self.session, self.last_ts_ms, self.prev_ts_ms
        recent = self.recent + [[int(e["ts_ms"]), str(e["item_id"]), w] for e, w in zip(ordered, weights)]
        self.recent = sorted(recent, reverse=True)[:RECENT_INTERACTIONS]
        for event in ordered:
            ts = int(event["ts_ms"])
            self._remember_item(str(event["item_id"]), ts, n_items)
            if session is None:
                session = Session(ts, ts)
            else:
                session.add(ts, gap_ms)
            if last is None or ts >= last:
                prev, last = last, ts
                self.session_id, self.last_device = str(event["session_id"]), str(event["device"])
            elif prev is None or ts > prev:
                prev = ts
        self.session, self.last_ts_ms, self.prev_ts_ms = session, last, prev
        self.events_total += len(ordered)

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
        return {name: column[0] for name, column in feature_columns([(user_id, self)]).items()}

    def to_json(self) -> bytes:
        # Floats are written shortest-round-trip, so a stored state reads back exactly.
        session = None if self.session is None else (self.session.start_ms, self.session.count)
        return _encode_state(_Stored(
            _STATE_VERSION, self.last_ts_ms, self.prev_ts_ms, self.decayed.tolist(), self.events_total,
            self.last_items, session, self.session_id, self.last_device, self.local_hour, self.weekend, self.recent,
        ))

    @classmethod
    def from_json(cls, data: bytes | str) -> UserState:
        try:
            stored = _decode_state(data)
        except msgspec.ValidationError as e:
            raise ValueError(f"not a stored user state (version {_STATE_VERSION}): {e}") from None
        if stored.v != _STATE_VERSION:
            raise ValueError(f"unsupported user state version {stored.v!r}")
        state = cls()
        state.last_ts_ms, state.prev_ts_ms = stored.ts, stored.prev_ts
        state.decayed = np.array(stored.decayed, dtype=np.float64)
        state.events_total, state.last_items = stored.events, stored.items
        if stored.session is not None and stored.ts is not None:  # a session exists once an event is folded
            start_ms, count = stored.session
            state.session = Session(start_ms, stored.ts, count)
        state.session_id, state.last_device = stored.session_id, stored.device
        state.local_hour, state.weekend = stored.hour, stored.weekend
        state.recent = stored.recent
        return state


class _Folded(NamedTuple):
    """What a state holds once an event is folded (typed: no longer optional)."""

    last_ts_ms: int
    session: Session
    local_hour: int
    weekend: bool


def _checked_folded(user_id: str, state: UserState) -> _Folded:
    if state.last_ts_ms is None or state.session is None or state.local_hour is None or state.weekend is None:
        raise ValueError(f"user {user_id!r}: no events folded yet")
    return _Folded(state.last_ts_ms, state.session, state.local_hour, state.weekend)


def feature_columns(users: Sequence[tuple[str, UserState]], fold_in: FoldIn | None = None) -> dict[str, list]:
    """The feature rows of many users as columns (FEATURE_COLUMNS, in order): cheaper than rows for a batch.
    ``fold_in``: the trained item factors the live user vectors are folded against (None: no vectors)."""
    folded = [_checked_folded(user_id, state) for user_id, state in users]
    states = [state for _, state in users]
    last = [f.last_ts_ms for f in folded]
    hours = [f.local_hour for f in folded]
    decayed = np.array([s.decayed for s in states]).reshape(len(states), _DECAYED_SIZE).T.tolist()
    vectors = [None] * len(states) if fold_in is None else fold_in.vectors([s.recent for s in states], last)
    model = None if fold_in is None else fold_in.factors.version
    return {
        "user_id": [user_id for user_id, _ in users],
        "event_timestamp": [_EPOCH + timedelta(milliseconds=ms) for ms in last],
        **dict(zip(DECAYED_COLUMNS, decayed)),
        "events_total": [s.events_total for s in states],
        "session_id": [s.session_id for s in states],
        "session_events": [f.session.count for f in folded],
        "session_length_s": [f.session.length_ms / 1000.0 for f in folded],
        "last_device": [s.last_device for s in states],
        "local_hour": hours,
        "daypart": [daypart(h) for h in hours],
        "is_weekend": [int(f.weekend) for f in folded],
        "last_items": [[item_id for item_id, _ in s.last_items] for s in states],
        "last_event_ts_ms": last,
        "prev_gap_s": [0.0 if s.prev_ts_ms is None else (ms - s.prev_ts_ms) / 1000.0 for s, ms in zip(states, last)],
        "user_vector": vectors,
        "user_vector_model": [model if v is not None else None for v in vectors],
    }


def fold_users(batch: Sequence[tuple[UserState, Sequence[Mapping]]], cfg: FeatureConfig) -> list[str | None]:
    """Fold each user's events into that user's state, in place: the one fold, for any number of users.

    Events are dicts of the event contract (``ts_ms`` in epoch ms) plus the item's ``genres`` and
    ``duration_minutes``; each user's are folded in fold order (``event_order``) whatever order
    they come in. Returns, per entry, None or why that user's update failed (a malformed event,
    sums that would not be finite); a failed entry's state is left as it was before the call,
    and the other users' updates stand.
    """
    half_life_ms = cfg.half_life_minutes * 60_000.0
    gap_ms = cfg.session_gap_minutes * 60_000.0
    errors: list[str | None] = [None] * len(batch)
    ordered = [sorted(events, key=event_order) for _, events in batch]
    sizes = [len(events) for events in ordered]
    deltas = np.zeros((sum(sizes), _DECAYED_SIZE))
    ts = np.empty(len(deltas), dtype=np.int64)
    weights = [0.0] * len(deltas)
    row = 0
    for n, events in enumerate(ordered):
        try:
            for event in events:
                weights[row] = _add_delta(deltas[row], event, cfg.click_weight)
                ts[row] = event["ts_ms"]
                row += 1
        except (ValueError, TypeError, KeyError) as e:
            errors[n] = f"{type(e).__name__}: {e}"
            row = sum(sizes[: n + 1])
            ts[row - sizes[n]:row] = 0  # the failed user's sums are not kept; any time will do
    live = [n for n, size in enumerate(sizes) if size]
    if not live:
        return errors
    starts = np.cumsum([0] + [sizes[n] for n in live[:-1]])
    sums = np.array([batch[n][0].decayed for n in live])
    refs = np.array([-1 if batch[n][0].last_ts_ms is None else batch[n][0].last_ts_ms for n in live], dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are caught per user below
        new_sums, _ = fold_decayed(sums, refs, deltas, ts, starts, half_life_ms)
    finite = np.isfinite(new_sums).all(axis=1)
    for k, n in enumerate(live):
        state, events, first = batch[n][0], ordered[n], int(starts[k])
        if errors[n] is not None:
            continue
        if not finite[k]:
            errors[n] = "the decayed sums would not be finite"
            continue
        state.decayed = new_sums[k]
        state._fold_scalars(events, weights[first:first + len(events)], gap_ms, cfg.last_n_items)
        assert state.last_ts_ms is not None  # events were folded
        local = local_time(state.last_ts_ms, cfg.timezone)
        state.local_hour, state.weekend = local.hour, is_weekend(local)
    return errors


def decay_features_to(row: Mapping, now_ms: int, cfg: FeatureConfig) -> dict:
    """A stored feature row aged to serving time ``now_ms``, plus ``time_since_last_event_s``.

    Events may be stamped slightly ahead of the server clock (the ingest allows some skew),
    so a ``now_ms`` before the latest event ages nothing rather than failing. The live ``user_vector`` is
    carried as stored: it is no decayed sum (its fold-in already weighs each event by its age then).
    """
    elapsed_ms = max(int(now_ms) - int(row["last_event_ts_ms"]), 0)
    factor = decay_factor(elapsed_ms, cfg.half_life_minutes * 60_000.0)
    aged = dict(row)
    for column in DECAYED_COLUMNS:
        aged[column] = float(row[column]) * factor
    aged["time_since_last_event_s"] = elapsed_ms / 1000.0
    return aged
