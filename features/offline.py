"""Batch features: the streaming fold (``UserState``) run over a whole event log.

Same fold, same order (event time, then event_id), so a user's final row here
equals what the streaming job last wrote for that user once it has seen the same
events. ``feature_history`` keeps the row after every event: the training-set
source, point-in-time correct by construction.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import pandas as pd

from features.user_state import FEATURE_COLUMNS, UserState, event_order
from streamrec.config import FeatureConfig
from streamrec.errors import UserError
from streams.schema import InvalidEvent, parse_event


def read_event_log(path: str | Path, *, skipped: Counter | None = None) -> Iterator[dict]:
    """Validated events of a JSONL log as dicts with ``ts_ms`` (epoch ms) instead of ``ts``.

    An invalid line raises ``UserError`` naming file:line, unless a ``skipped`` Counter is
    given: then it is skipped and counted under its reason code. Blank lines are not events.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as f:
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
            yield dataclasses.asdict(event)


def load_items(path: str | Path) -> dict[str, dict]:
    """The generator's items.jsonl as item_id -> record (title, genres, year, duration_minutes, popularity)."""
    path = Path(path)
    items: dict[str, dict] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                item_id, genres, _ = record["item_id"], record["genres"], record["duration_minutes"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UserError(f"{path}:{n}: not an item record ({type(e).__name__}: {e})") from None
            if not isinstance(genres, list):
                raise UserError(f"{path}:{n}: genres must be a list, got {genres!r}")
            if item_id in items:
                raise UserError(f"{path}:{n}: item {item_id!r} appears twice")
            items[item_id] = record
    return items


def with_item(event: Mapping, items: Mapping[str, Mapping]) -> dict:
    """The event plus its item's ``genres`` and ``duration_minutes``.

    An item missing from the catalog gets no genres and an unknown duration, as a
    left join would give the streaming job: its events still count, just carry no affinity.
    """
    item = items.get(event["item_id"], {})
    return {**event, "genres": item.get("genres", []), "duration_minutes": item.get("duration_minutes")}


def _events_by_user(events: Iterable[Mapping] | pd.DataFrame, items: Mapping[str, Mapping]) -> dict[str, list[dict]]:
    records = events.to_dict("records") if isinstance(events, pd.DataFrame) else events
    by_user: dict[str, list[dict]] = {}
    for event in records:
        by_user.setdefault(str(event["user_id"]), []).append(with_item(event, items))
    return by_user


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))


def compute_features(
    events: Iterable[Mapping] | pd.DataFrame, items: Mapping[str, Mapping], cfg: FeatureConfig
) -> pd.DataFrame:
    """One row per user (sorted by user_id): the feature row of the user's final state."""
    rows = []
    for user_id, user_events in sorted(_events_by_user(events, items).items()):
        state = UserState()
        state.apply(user_events, cfg)
        rows.append(state.feature_row(user_id))
    return _frame(rows)


def feature_history(
    events: Iterable[Mapping] | pd.DataFrame, items: Mapping[str, Mapping], cfg: FeatureConfig
) -> pd.DataFrame:
    """One row per event: the user's feature row right after that event, by user then event order.

    A row's ``event_timestamp`` is its event's time, so a point-in-time join that asks for
    features strictly before a label's time never sees the labelled event itself.
    """
    rows = []
    for user_id, user_events in sorted(_events_by_user(events, items).items()):
        state = UserState()
        for event in sorted(user_events, key=event_order):
            state.apply([event], cfg)
            rows.append(state.feature_row(user_id))
    return _frame(rows)
