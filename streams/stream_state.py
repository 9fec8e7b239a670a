"""Stream step 2: per-user state — dedup, lateness, and the feature fold.

Runs inside Spark's ``applyInPandasWithState``, grouped by user. The state
(checkpointed by Spark, so a recomputed batch starts from the same version) is
the user's ``UserState`` plus the event ids seen within the watermark.

The watermark is per user: the latest event time seen for that user, in Kafka
order, minus ``spark.watermark``. Judging lateness in Kafka order (a user's
events sit in one partition) makes every decision independent of where
micro-batch boundaries fall, so a restarted job decides exactly as an
uninterrupted one. An event behind the watermark is not folded (its dedup
record may be gone) but sent to the DLQ as ``late_event``; a duplicate inside
it is dropped and counted.
"""
from __future__ import annotations

import functools
import json
from typing import Iterator

import pandas as pd

from features.offline import load_items, with_item
from features.user_state import UserState
from streamrec.config import FeatureConfig
from streams.schema import Event
from streams.stream_parse import INVALID_KEY

OUTPUT_SCHEMA = (
    "kind string, user_id string, payload string, value binary, source string, "
    "reason string, detail string, event_ms long, kafka_ms long"
)
STATE_SCHEMA = "user_state string, seen string, max_ms long"
_COLUMNS = ["kind", "user_id", "payload", "value", "source", "reason", "detail", "event_ms", "kafka_ms"]


@functools.lru_cache(maxsize=4)
def _catalog(path: str) -> dict:
    # Loaded once per Python worker, not shipped with every task.
    return load_items(path)


def _dead_letters(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[["user_id", "value", "source", "reason", "detail", "kafka_ms"]].copy()
    out["kind"], out["payload"], out["event_ms"] = "dlq", None, None
    return out[_COLUMNS]


def screen(events: list[dict], seen: dict[str, int], max_ms: int | None, lateness_ms: int) -> tuple[list, list, list, int | None]:
    """Split events (in Kafka order) into (accepted, late, duplicate); update ``seen`` and the max.

    ``seen`` keeps event ids whose time is still inside the watermark.
    """
    accepted, late, duplicates = [], [], []
    for event in events:
        ts = event["ts_ms"]
        if max_ms is not None and ts < max_ms - lateness_ms:
            late.append(event)
            continue
        if event["event_id"] in seen:
            duplicates.append(event)
            continue
        seen[event["event_id"]] = ts
        accepted.append(event)
        if max_ms is None or ts > max_ms:
            max_ms = ts
    if max_ms is not None:
        horizon = max_ms - lateness_ms
        for event_id in [k for k, ts in seen.items() if ts < horizon]:
            del seen[event_id]
    return accepted, late, duplicates, max_ms


def fold_user(key: tuple, frames: Iterator[pd.DataFrame], state, *, cfg: FeatureConfig, lateness_ms: int, catalog_path: str) -> Iterator[pd.DataFrame]:
    (user_id,) = key
    frame = pd.concat(list(frames), ignore_index=True)
    if user_id == INVALID_KEY:
        yield _dead_letters(frame)
        return

    if state.exists:
        user_json, seen_json, max_ms = state.get
        user, seen = UserState.from_json(user_json), json.loads(seen_json)
    else:
        user, seen, max_ms = UserState(), {}, None

    # Kafka order within the user's partition: "source" is topic/partition/offset.
    frame["_offset"] = frame["source"].str.rsplit("/", n=1).str[1].astype("int64")
    frame = frame.sort_values("_offset", kind="stable")
    events = [json.loads(e) for e in frame["event"]]
    origin = {id(e): (src, int(k)) for e, src, k in zip(events, frame["source"], frame["kafka_ms"])}
    accepted, late, duplicates, max_ms = screen(events, seen, max_ms, lateness_ms)

    out = []
    if accepted:
        user.apply([with_item(e, _catalog(catalog_path)) for e in accepted], cfg)
        row = user.feature_row(user_id)
        row["event_timestamp"] = row["last_event_ts_ms"]  # JSON-friendly; the sink turns it back into a time
        newest = max(accepted, key=lambda e: e["ts_ms"])
        out.append(("features", user_id, json.dumps(row), None, None, None, None, newest["ts_ms"], origin[id(newest)][1]))
    for event in late:
        source, k_ms = origin[id(event)]
        detail = f"event time {event['ts_ms']} is behind this user's watermark {max_ms - lateness_ms}"
        out.append(("dlq", user_id, None, Event(**event).to_json_bytes(), source, "late_event", detail, event["ts_ms"], k_ms))
    for event in duplicates:
        source, k_ms = origin[id(event)]
        out.append(("duplicate", user_id, None, None, source, None, None, event["ts_ms"], k_ms))

    state.update((user.to_json(), json.dumps(seen), max_ms))
    yield pd.DataFrame(out, columns=_COLUMNS)
