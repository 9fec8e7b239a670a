"""The labelled event log: every field of the event contract (``context`` aside) plus ``models.data``'s ``label``.

Read through the one reader of event logs, ``features.offline.read_event_log``. The recommenders use the ids, time,
type and watch time; retrieval also needs ``device`` (context popularity) and ``event_id`` / ``session_id`` (the
feature fold that gives a user's live affinities).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from features.offline import read_event_log
from models.data import label_positives
from streamrec.errors import UserError


def load_event_log(
    events_path: str | Path, items: Mapping[str, Mapping] | None = None, min_watch_fraction: float = 0.0,
    users: Callable[[str], str] | None = None,
) -> pd.DataFrame:
    """One row per valid event (an invalid line is a UserError naming it); ``items`` (item_id -> record with
    ``duration_minutes``) is needed only when ``min_watch_fraction`` > 0; ``users``: as ``read_event_log``'s."""
    events = pd.DataFrame(read_event_log(events_path, users=users))
    if events.empty:
        raise UserError(f"{events_path}: the event log has no events")
    durations = None
    if min_watch_fraction > 0:
        if items is None:
            raise UserError("min_watch_fraction > 0 needs the items catalog for title durations")
        durations = 60.0 * pd.Series({i: r["duration_minutes"] for i, r in items.items()}, dtype=float)  # null: NaN
    return label_positives(events.drop(columns="context"), durations, min_watch_fraction)
