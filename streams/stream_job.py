"""The streaming feature job: Kafka -> validate -> per-user decayed features -> Feast.

    source (streams.spark_session.kafka_stream)
      -> mapInPandas(stream_parse.parse_records)          one row per record: event or dead letter
      -> groupBy(user).applyInPandasWithState(stream_state.fold_user)   dedup, lateness, fold
      -> foreachBatch(stream_sink.FeastSink)              online + offline log, DLQ, stats

State and offsets live in the checkpoint dir (``<data>/stream/checkpoint``), so a
restarted job continues exactly where the last committed batch ended.
"""
from __future__ import annotations

import functools
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from streamrec.config import Settings
from streamrec.errors import UserError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|seconds?|m|minutes?|h|hours?)\s*$")
_UNIT_MS = {"ms": 1, "millisecond": 1, "s": 1000, "second": 1000, "m": 60_000, "minute": 60_000, "h": 3_600_000, "hour": 3_600_000}


def duration_ms(text: str) -> int:
    """'10 minutes' -> 600000 (Spark's interval words, plus ms/s/m/h)."""
    m = _DURATION.match(text)
    if not m:
        raise UserError(f"spark.watermark: cannot read {text!r} as a duration (e.g. '10 minutes')")
    unit = m.group(2).rstrip("s") if m.group(2) not in ("ms", "s") else m.group(2)
    return int(float(m.group(1)) * _UNIT_MS[unit])


@dataclass
class StreamPaths:
    checkpoint: Path
    stats: Path
    heartbeat: Path  # exists while a query runs (ops' readiness probe)

    @classmethod
    def of(cls, settings: Settings) -> StreamPaths:
        return cls(
            settings.data_path / "stream" / "checkpoint",
            settings.path("stream", "stats.jsonl"),
            settings.path("stream", "running"),
        )


def default_catalog(settings: Settings) -> Path:
    return settings.data_path / "world" / "items.jsonl"


def start_query(spark, settings: Settings, sink, *, catalog: Path, available_now: bool, starting_offsets: str = "earliest"):
    from pyspark.sql.streaming.state import GroupStateTimeout

    from streams.spark_session import kafka_stream
    from streams.stream_parse import PARSED_SCHEMA, parse_records
    from streams.stream_state import OUTPUT_SCHEMA, STATE_SCHEMA, fold_user

    if not catalog.is_file():
        raise UserError(f"item catalog {catalog} not found (write one with 'streamrec generate' or pass --catalog)")
    paths = StreamPaths.of(settings)
    parse = functools.partial(
        parse_records, max_bytes=settings.ingest.max_event_bytes, max_future_skew_s=settings.ingest.max_future_skew_seconds
    )
    fold = functools.partial(
        fold_user, cfg=settings.features, lateness_ms=duration_ms(settings.spark.watermark), catalog_path=str(catalog.resolve())
    )
    folded = (
        kafka_stream(spark, settings, starting_offsets=starting_offsets)
        .mapInPandas(parse, PARSED_SCHEMA)
        .groupBy("user_id")
        .applyInPandasWithState(fold, OUTPUT_SCHEMA, STATE_SCHEMA, "update", GroupStateTimeout.NoTimeout)
    )
    writer = (
        folded.writeStream.queryName("streamrec_features")
        .outputMode("update")
        .option("checkpointLocation", str(paths.checkpoint))
        .foreachBatch(sink)
    )
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=f"{settings.spark.trigger_seconds} seconds")
    return writer.start()


def consumer_lag(progress: dict | None) -> int | None:
    """Records in Kafka not yet processed, from a query progress (latest minus end offsets)."""
    if not progress or not progress.get("sources"):
        return None
    lag = 0
    for source in progress["sources"]:
        end, latest = (json.loads(x) if isinstance(x, str) else x for x in (source.get("endOffset"), source.get("latestOffset")))
        if not end or not latest:
            return None  # e.g. a batch planned without asking the source for its latest offsets
        for topic, parts in latest.items():
            for p, off in parts.items():
                lag += max(0, int(off) - int(end.get(topic, {}).get(p, 0)))
    return lag


def run(settings: Settings, *, catalog: Path | None = None, available_now: bool = False, echo=print) -> dict:
    """Run the job until stopped (or, with ``available_now``, until caught up); returns totals."""
    from features.store import FeatureStoreClient
    from streams.spark_session import get_spark
    from streams.stream_sink import FeastSink

    paths = StreamPaths.of(settings)
    FeatureStoreClient(settings).apply()
    sink = FeastSink(settings, paths.stats, echo=echo)
    spark = get_spark(settings)
    query = start_query(spark, settings, sink, catalog=catalog or default_catalog(settings), available_now=available_now)
    echo(f"stream: query {query.id} running; checkpoint {paths.checkpoint}; stats {paths.stats}")
    paths.heartbeat.write_text(f"{os.getpid()} {query.id}")
    try:
        while query.isActive:
            query.awaitTermination(10)
            lag = consumer_lag(query.lastProgress)
            if lag is not None:
                with paths.stats.open("a") as f:
                    f.write(json.dumps({"progress_at": time.time(), "lag": lag}) + "\n")
        if query.exception():
            raise query.exception()
    except KeyboardInterrupt:
        query.stop()
    finally:
        paths.heartbeat.unlink(missing_ok=True)
        sink.close()
    return summarize_stats(paths.stats)


def _read_stats(path: Path) -> tuple[dict[int, dict], int | None]:
    """Batch records by id (the last record of a recomputed batch wins) and the latest lag."""
    if not path.is_file():
        raise UserError(f"no stream stats at {path}: the stream job has not run with this data dir")
    batches: dict[int, dict] = {}
    lag = None
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "batch_id" in rec:
            batches[rec["batch_id"]] = rec
        else:
            lag = rec["lag"]
    return batches, lag


def batch_ids(path: Path) -> list[int]:
    return sorted(_read_stats(path)[0]) if path.is_file() else []


def summarize_stats(path: Path, last: int | None = None, first_batch: int = 0) -> dict:
    """Totals and freshness over the recorded batches (from ``first_batch``, or the ``last`` N)."""
    import numpy as np

    batches, lag = _read_stats(path)
    chosen = [batches[k] for k in sorted(batches) if k >= first_batch]
    if last:
        chosen = chosen[-last:]

    def agg(key: str) -> dict:
        per_batch = [b[key] for b in chosen if b[key]]
        if not per_batch:
            return {}
        # Per-batch percentiles combined conservatively: the median of p50s, the worst p95 and p99.
        return {
            "p50": round(float(np.median([p["p50"] for p in per_batch])), 1),
            "p95": round(float(max(p["p95"] for p in per_batch)), 1),
            "p99": round(float(max(p["p99"] for p in per_batch)), 1),
        }

    totals = {k: sum(b[k] for b in chosen) for k in ("users", "written", "dlq", "invalid", "late", "duplicates")}
    return {"batches": len(chosen), **totals, "freshness_event_ms": agg("freshness_event_ms"),
            "freshness_ingest_ms": agg("freshness_ingest_ms"), "consumer_lag": lag}
