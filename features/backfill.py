"""Backfill the offline session log from a recorded event log, as if the stream had seen it.

The stream job logs one session row per user per micro-batch; a recorded log gets the
same fold (``features.offline.feature_history``) with one row per event instead, so a
point-in-time join finds the state right before any event. The rows go where the stream's
go (``FeatureStoreClient.log_offline``) under the batch id ``backfill-<hash of the log>``.
The log holds one backfill at a time: re-running replaces its files, and backfilling another
log removes the previous one's, whose users and times would otherwise mix into the joins.
Rows a stream job logged for the same events are identical, so a join reads the same values; the live user
vectors are folded against the item factors trained so far (``features.user_vector``), as the stream's are.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from features.offline import feature_history, read_event_log
from features.user_vector import FactorsFile, FoldIn, item_factors_path
from streamrec.catalog import load_items
from streamrec.config import Settings
from streamrec.errors import UserError
from streamrec.pseudonyms import pseudonymizer

_HASH_CHUNK = 1 << 20


def log_hash(path: str | Path) -> str:
    """First 16 hex digits of the file's SHA-256: names the backfill batch of this log."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise UserError(f"cannot read event log {path}: {e.strerror}") from None
    return digest.hexdigest()[:16]


def backfill_session_log(settings: Settings, events_path: str | Path, items_path: str | Path) -> int:
    """Write one session feature row per event of ``events_path`` into the offline session log;
    returns the number of rows. Online state is left alone: that is the stream's."""
    from features.store import FeatureStoreClient
    from features.tables import arrow_schema, to_table

    factors = FactorsFile(item_factors_path(settings)).current() if settings.features.live_user_vectors else None
    history = feature_history(read_event_log(events_path, users=pseudonymizer(settings)), load_items(items_path),
                              settings.features,
                              FoldIn.of(factors, settings.features) if factors is not None else None)
    if history.empty:
        raise UserError(f"{events_path} holds no events to backfill")
    client = FeatureStoreClient(settings)
    table = to_table(history, arrow_schema(client.defs.session_view), f"session rows of {events_path}")
    batch = f"backfill-{log_hash(events_path)}"
    client.log_offline(table, batch)
    log_dir = client.session_log_dir
    for stale in log_dir.glob("date=*/batch-backfill-*.parquet"):
        if stale.name != f"batch-{batch}.parquet":
            stale.unlink()
    return table.num_rows
