"""Batch features: the streaming fold (``fold_users``) run over a whole event log.

Same fold, same order (event time, then event_id), so a user's final row here
equals what the streaming job last wrote for that user once it has seen the same
events. ``feature_history`` keeps the row after every event time: the training-set
source, point-in-time correct by construction.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import msgspec
import pandas as pd

from features.user_state import FEATURE_COLUMNS, UserState, event_order, feature_columns, fold_users
from features.user_vector import FoldIn
from streamrec.config import FeatureConfig
from streamrec.errors import UserError
from streamrec.events import InvalidEvent, parse_event


def read_event_log(path: str | Path, *, skipped: Counter | None = None,
                   users: Callable[[str], str] | None = None) -> Iterator[dict]:
    """Validated events of a JSONL log as dicts with ``ts_ms`` (epoch ms) instead of ``ts``.

    An invalid line raises ``UserError`` naming file:line, unless a ``skipped`` Counter is
    given: then it is skipped and counted under its reason code. Blank lines are not events.
    ``users``: what a user id becomes (``streamrec.pseudonyms.pseudonymizer``: a log file is an edge too, when
    what is read from it reaches Feast and the models).
    """
    path = Path(path)
    try:
        f = path.open(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read event log {path}: {e.strerror}") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                # A log is history: its events may lie anywhere relative to today's clock.
                event = parse_event(line, max_future_skew_s=math.inf)
            except InvalidEvent as e:
                if skipped is None:
                    raise UserError(f"{path}:{n}: invalid event ({e})") from None
                skipped[e.reason] += 1
                continue
            # Shallow, in C: the event was decoded for this record alone, so its context is the caller's to keep.
            record = msgspec.structs.asdict(event)
            if users is not None:
                record["user_id"] = users(record["user_id"])
            yield record


def item_fields(item_id: str, items: Mapping[str, Mapping]) -> dict:
    """What the fold needs of an event's item: its ``genres`` and ``duration_minutes``.

    An item missing from the catalog gets no genres and an unknown duration, as a
    left join would give the streaming job: its events still count, just carry no affinity.
    """
    item = items.get(item_id, {})
    return {"genres": item.get("genres", []), "duration_minutes": item.get("duration_minutes")}


def with_item(event: Mapping, items: Mapping[str, Mapping]) -> dict:
    """A copy of the event with its item's fields (``item_fields``)."""
    return {**event, **item_fields(event["item_id"], items)}


def _events_by_user(events: Iterable[Mapping] | pd.DataFrame, items: Mapping[str, Mapping]) -> dict[str, list[dict]]:
    records = events.to_dict("records") if isinstance(events, pd.DataFrame) else events
    by_user: dict[str, list[dict]] = {}
    for event in records:
        by_user.setdefault(str(event["user_id"]), []).append(with_item(event, items))
    return by_user


def _frame(columns: dict[str, list] | None) -> pd.DataFrame:
    return pd.DataFrame(columns, columns=list(FEATURE_COLUMNS))


def _folded(pairs: list[tuple[str, UserState, list[dict]]], cfg: FeatureConfig) -> None:
    errors = fold_users([(state, events) for _, state, events in pairs], cfg)
    for (user_id, _, _), error in zip(pairs, errors):
        if error is not None:
            raise ValueError(f"user {user_id!r}: {error}")


def compute_features(
    events: Iterable[Mapping] | pd.DataFrame, items: Mapping[str, Mapping], cfg: FeatureConfig,
    fold_in: FoldIn | None = None,
) -> pd.DataFrame:
    """One row per user (sorted by user_id): the feature row of the user's final state (with its live user
    vector against ``fold_in``'s item factors, when given)."""
    pairs = [(user_id, UserState(), user_events) for user_id, user_events in sorted(_events_by_user(events, items).items())]
    _folded(pairs, cfg)
    return _frame(feature_columns([(user_id, state) for user_id, state, _ in pairs], fold_in) if pairs else None)


def feature_history(
    events: Iterable[Mapping] | pd.DataFrame, items: Mapping[str, Mapping], cfg: FeatureConfig,
    fold_in: FoldIn | None = None,
) -> pd.DataFrame:
    """One row per user and event time: the user's feature row right after the last event at that time, by user
    then time.

    A row's ``event_timestamp`` is its events' time, so a point-in-time join that asks for features strictly
    before a label's time never sees the labelled event itself; events sharing a time (MovieLens has many ratings
    in one second) leave one row, the state after all of them, so the join has no tie to break.
    """
    by_user = {user_id: sorted(user_events, key=event_order) for user_id, user_events in _events_by_user(events, items).items()}
    states = {user_id: UserState() for user_id in by_user}
    rows: dict[str, list] = {name: [] for name in FEATURE_COLUMNS}
    # Step k folds every user's k-th event at once: one fold call per step, not per event.
    for k in range(max(map(len, by_user.values()), default=0)):
        step = [(user_id, states[user_id], [user_events[k]]) for user_id, user_events in by_user.items() if k < len(user_events)]
        _folded(step, cfg)
        # feature_columns copies what it reads, so the next steps' folds leave these rows as they are.
        for name, values in feature_columns([(user_id, state) for user_id, state, _ in step], fold_in).items():
            rows[name] += values
    # Stable: each user's rows stay in event order.
    history = _frame(rows).sort_values("user_id", kind="stable", ignore_index=True)
    return history.drop_duplicates(["user_id", "event_timestamp"], keep="last", ignore_index=True)
