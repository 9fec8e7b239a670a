"""Stream step 1: Kafka records -> validated events or dead letters (pandas in, pandas out).

Runs inside Spark's ``mapInPandas``. Every record comes out as exactly one row:
an ``event`` row keyed by its user, or an ``invalid`` row carrying the original
bytes and the reason, so nothing is lost between the topic and the sink.
"""
from __future__ import annotations

import json
from typing import Iterator

import pandas as pd

from streams.schema import InvalidEvent, parse_event

# Invalid records share one group key that no valid event can have (user_id is non-empty).
INVALID_KEY = ""

PARSED_SCHEMA = (
    "user_id string, kind string, event string, value binary, source string, "
    "reason string, detail string, kafka_ms long"
)


def parse_records(frames: Iterator[pd.DataFrame], *, max_bytes: int, max_future_skew_s: float) -> Iterator[pd.DataFrame]:
    """Validate each Kafka record with the producer's own validator.

    "Too far in the future" is judged against the record's Kafka timestamp, not
    the clock, so a batch recomputed after a crash judges every record the same way.
    """
    for frame in frames:
        rows = []
        for value, topic, partition, offset, ts in zip(
            frame["value"], frame["topic"], frame["partition"], frame["offset"], frame["timestamp"]
        ):
            kafka_ms = int(pd.Timestamp(ts).value // 1_000_000)
            source = f"{topic}/{partition}/{offset}"
            try:
                event = parse_event(value, now_ms=kafka_ms, max_bytes=max_bytes, max_future_skew_s=max_future_skew_s)
            except InvalidEvent as e:
                rows.append((INVALID_KEY, "invalid", None, bytes(value) if value is not None else b"", source, e.reason, e.detail, kafka_ms))
                continue
            record = {f: getattr(event, f) for f in event.__slots__}
            rows.append((event.user_id, "event", json.dumps(record), None, source, None, None, kafka_ms))
        yield pd.DataFrame(rows, columns=["user_id", "kind", "event", "value", "source", "reason", "detail", "kafka_ms"])
