"""One micro-batch of the stream job, as pure functions: Kafka records -> dead letters, per-user
screening (dedup, lateness) and the shared fold. No Spark, no I/O: the sink does those.

Each user's stored record is the ``UserState``; the event ids folded inside the watermark are
kept apart, one row per event (``features.stream_state``), so a batch costs in proportion to its
events, not to the users' history. The watermark is per user: the latest event time folded for
that user minus ``lateness_ms``. A batch's events of a user are taken in event-time order (ties in
Kafka order, so a replay is judged alike): a user's events that another client's partitioner, or
no key, spread over several partitions are judged by when they happened, not by which partition
was read first. An event behind it is not folded (its dedup record may be gone) but dead-lettered as
``late_event``; a duplicate inside it is dropped and counted. A user whose fold fails (``fold_users`` says why) keeps the stored
record; that batch's accepted events of the user go to the DLQ as ``fold_error``, and every
other user's update stands. Nothing the validator accepts can stop the job.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from features.offline import item_fields
from features.user_state import UserState, feature_columns, fold_users
from features.user_vector import FoldIn
from streamrec.config import FeatureConfig
from streamrec.events import InvalidEvent, parse_event


@dataclass
class DeadLetter:
    value: bytes  # the record's original bytes
    source: str  # topic/partition/offset
    reason: str
    detail: str


@dataclass
class _Pending:
    """A valid event on its way to the fold, with where it came from."""

    event: dict
    value: bytes
    source: str
    kafka_ms: int


@dataclass
class Parsed:
    """A batch's records split into each user's valid events (Kafka order) and invalid records."""

    by_user: dict[str, list[_Pending]] = field(default_factory=dict)
    invalid: list[DeadLetter] = field(default_factory=list)
    records: int = 0


@dataclass
class Folded:
    """What a batch changes: records to store, feature rows (columns) to write, dead letters, counts."""

    records: dict[str, bytes]  # user -> new stored record
    folded_ids: list[tuple[str, str, int]]  # (user, event_id, event time) of every folded event, for dedup
    horizons: dict[str, int]  # user -> watermark before the batch: dedup rows older than it can go
    columns: dict[str, list] | None  # feature rows of the updated users (None when nobody was updated)
    dead: list[DeadLetter]
    duplicates: int
    event_ms: np.ndarray  # event time of every folded event (freshness is measured over each one)
    kafka_ms: np.ndarray  # its broker append time

    @property
    def users(self) -> int:
        return len(self.columns["user_id"]) if self.columns else 0

    def count(self, reason: str) -> int:
        return sum(d.reason == reason for d in self.dead)


def parse_records(
    values: Sequence[bytes | None], topics: Sequence[str], partitions: Sequence[int], offsets: Sequence[int],
    kafka_ms: Sequence[int], *, max_bytes: int, max_future_skew_s: float,
) -> Parsed:
    """Validate each record with the producer's own validator, in Kafka order.

    "Too far in the future" is judged against the record's Kafka timestamp, not the clock,
    so a recomputed batch judges every record the same way.
    """
    parsed = Parsed(records=len(values))
    order = np.lexsort((np.asarray(offsets), np.asarray(partitions), np.asarray(topics, dtype=object).astype(str)))
    for i in order.tolist():
        value, k_ms = values[i], int(kafka_ms[i])
        source = f"{topics[i]}/{partitions[i]}/{offsets[i]}"
        raw = b"" if value is None else bytes(value)
        try:
            e = parse_event(raw, now_ms=k_ms, max_bytes=max_bytes, max_future_skew_s=max_future_skew_s)
        except InvalidEvent as err:
            parsed.invalid.append(DeadLetter(raw, source, err.reason, err.detail))
            continue
        event = {"event_id": e.event_id, "event_type": e.event_type, "item_id": e.item_id, "ts_ms": e.ts_ms,
                 "device": e.device, "session_id": e.session_id, "watch_seconds": e.watch_seconds}
        parsed.by_user.setdefault(e.user_id, []).append(_Pending(event, raw, source, k_ms))
    return parsed


def without_deleted(parsed: Parsed, deleted: Mapping[str, int]) -> int:
    """Drop the events of deleted users (user -> deletion time) at or before their deletion, in place; returns how
    many. A later event starts the user afresh."""
    dropped = 0
    for user_id in parsed.by_user.keys() & deleted.keys():
        pending = parsed.by_user[user_id]
        kept = [p for p in pending if p.event["ts_ms"] > deleted[user_id]]
        dropped += len(pending) - len(kept)
        if kept:
            parsed.by_user[user_id] = kept
        else:
            del parsed.by_user[user_id]
    return dropped


def screen(pending: Sequence[_Pending], seen: set[str], max_ms: int | None, lateness_ms: int) -> tuple[list, list, int]:
    """Split a user's events (in the order given) into (accepted, late) and count duplicates. ``seen``: the
    user's event ids folded before (it gains the accepted ones); ``max_ms``: the latest folded event time."""
    accepted, late, duplicates = [], [], 0
    for p in pending:
        ts = p.event["ts_ms"]
        if max_ms is not None and ts < max_ms - lateness_ms:
            late.append((p, max_ms - lateness_ms))
            continue
        if p.event["event_id"] in seen:
            duplicates += 1
            continue
        seen.add(p.event["event_id"])
        accepted.append(p)
        if max_ms is None or ts > max_ms:
            max_ms = ts
    return accepted, late, duplicates


def fold_batch(
    parsed: Parsed, stored: Mapping[str, bytes | None], seen: Mapping[str, set[str]], catalog: Mapping[str, Mapping],
    cfg: FeatureConfig, lateness_ms: int, fold_in: FoldIn | None = None,
) -> Folded:
    """Screen and fold every user of a parsed batch, starting from ``stored`` (user -> record or None);
    ``seen``: per user, which of the batch's event ids were folded by earlier batches; ``fold_in``: the item
    factors the updated users' live vectors are folded against (None: rows without one)."""
    dead = list(parsed.invalid)
    duplicates = 0
    horizons: dict[str, int] = {}
    work: list[tuple[str, UserState, list[_Pending]]] = []
    for user_id, pending in parsed.by_user.items():
        record = stored.get(user_id)
        state = UserState.from_json(record) if record is not None else UserState()
        if state.last_ts_ms is not None:
            horizons[user_id] = state.last_ts_ms - lateness_ms
        # sorted() is stable: equal event times keep their Kafka order.
        in_time = sorted(pending, key=lambda p: p.event["ts_ms"])
        accepted, late, dups = screen(in_time, set(seen.get(user_id, ())), state.last_ts_ms, lateness_ms)
        duplicates += dups
        for p, watermark in late:
            dead.append(DeadLetter(p.value, p.source, "late_event",
                                   f"event time {p.event['ts_ms']} is behind this user's watermark {watermark}"))
        if accepted:
            work.append((user_id, state, accepted))
    for _, _, accepted in work:
        for p in accepted:  # the batch's own dicts: joined in place, not copied
            p.event.update(item_fields(p.event["item_id"], catalog))
    errors = fold_users([(state, [p.event for p in accepted]) for _, state, accepted in work], cfg)
    done, event_ms, kafka_ms, folded_ids = [], [], [], []
    for (user_id, state, accepted), error in zip(work, errors):
        if error is not None:
            dead += [DeadLetter(p.value, p.source, "fold_error", f"user {user_id!r}: {error}") for p in accepted]
            continue
        done.append((user_id, state))
        event_ms += [p.event["ts_ms"] for p in accepted]
        kafka_ms += [p.kafka_ms for p in accepted]
        folded_ids += [(user_id, p.event["event_id"], p.event["ts_ms"]) for p in accepted]
    return Folded(
        records={user_id: state.to_json() for user_id, state in done}, folded_ids=folded_ids, horizons=horizons,
        columns=feature_columns(done, fold_in) if done else None,
        dead=dead, duplicates=duplicates,
        event_ms=np.array(event_ms, dtype=np.int64), kafka_ms=np.array(kafka_ms, dtype=np.int64),
    )


def latest_only(parsed: Parsed, catalog: Mapping[str, Mapping], cfg: FeatureConfig) -> Folded:
    """The engine's stateless floor: each user's latest event of the batch alone, no stored state,
    no screening (what the stream job costs without its state; ``streamrec bench freshness``)."""
    latest = {user_id: max(pending, key=lambda p: p.event["ts_ms"]) for user_id, pending in parsed.by_user.items()}
    pairs = [(user_id, UserState()) for user_id in latest]
    for p in latest.values():
        p.event.update(item_fields(p.event["item_id"], catalog))
    errors = fold_users([(state, [latest[user_id].event]) for user_id, state in pairs], cfg)
    done = [(u, s) for (u, s), error in zip(pairs, errors) if error is None]
    all_pending = [p for pending in parsed.by_user.values() for p in pending]
    return Folded(
        records={}, folded_ids=[], horizons={}, columns=feature_columns(done) if done else None,
        dead=list(parsed.invalid), duplicates=0,
        event_ms=np.array([p.event["ts_ms"] for p in all_pending], dtype=np.int64),
        kafka_ms=np.array([p.kafka_ms for p in all_pending], dtype=np.int64),
    )
