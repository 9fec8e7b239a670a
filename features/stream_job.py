"""The streaming feature job: Kafka -> validate, screen, fold -> Feast (online + offline log).

    source (streams.spark_session.kafka_stream, per-partition Kafka offsets)
      -> foreachBatch(features.stream_sink.StreamSink)   parse, dedup/lateness, fold, write

Spark Structured Streaming is the engine: it plans micro-batches, keeps the Kafka offsets
in the checkpoint (``spark.checkpoint_uri``, a path or URI; default ``<data>/stream/checkpoint``)
and replays an unfinished batch after a crash. The per-user state lives in a store versioned by
batch id inside the same checkpoint dir (``features.stream_state``), so a restarted job continues
exactly where the last committed batch ended. Everything there is written through
``streams.storage``, so the checkpoint may be remote; the stats and the heartbeat stay local.

Why this shape, measured on the project's 2-core machine (pyspark 4.3, 2,000 users):
- The previous job grouped by user with ``applyInPandasWithState``: ~1 ms of Python per
  user per batch (the issue's profiling; 2,000 users = 2 s), plus Feast's per-value online write (~0.5 ms a user
  on SQLite): p99 5.5 s at 100 events/s, saturation near 2,000 events/s.
  ``transformWithStateInPandas`` is slower for this shape (a state-server round trip per call).
- A micro-batch costs ~0.3 s even when nearly empty (offset and commit logs ~0.13 s, the
  Kafka offsets ~0.04 s, a task ~0.1 s). Spark's Real-Time Mode needs the JVM Kafka source
  and allows no Python operators; async progress tracking gives up the offset WAL that an
  exact replay needs. So this is the floor, and p99 is about two cycles.
- So the Python work is per batch, not per user: one ``fold_users`` call folds every
  user's events (decayed sums as one numpy expression); the state is read from memory and
  written as one changelog file (per-row SQLite cost ~10 µs a row: ~150 ms a batch); the
  online rows go to Redis in one pipelined round trip; executors read Kafka with librdkafka
  (kafka-python decoded records at 40-70 µs each), all partitions in one task (a task costs
  ~0.1 s: with four, a batch took ~0.33 s where one takes ~0.15 s).
  ``streamrec bench freshness`` prints the per-stage split beside the stateless floor
  (README, "Freshness": p99 0.9 s at 1,000 events/s, 2.0-3.0 s at 5,000; ~10,000 events/s processed).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from streamrec.config import Settings
from streamrec.errors import UserError
from streams.storage import Location

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|seconds?|m|minutes?|h|hours?)\s*$")
_UNIT_MS = {"ms": 1, "millisecond": 1, "s": 1000, "second": 1000, "m": 60_000, "minute": 60_000, "h": 3_600_000, "hour": 3_600_000}


def duration_ms(text: str) -> int:
    """'10 minutes' -> 600000 (Spark's interval words, plus ms/s/m/h)."""
    m = _DURATION.match(text)
    if not m:
        raise UserError(f"spark.watermark: cannot read {text!r} as a duration (e.g. '10 minutes')")
    unit = m.group(2).rstrip("s") if m.group(2) not in ("ms", "s") else m.group(2)
    return int(float(m.group(1)) * _UNIT_MS[unit])


KILL_SWITCH_ENV = "FAULT_INJECT_KILL_AFTER_SINK"  # fault injection (see features.stream_sink); not a STREAMREC_ setting

# Spark ends Python workers idle for a minute; an idle job keeps one warm (see warm_python_workers).
WARM_EVERY_S = 30.0


@dataclass
class StreamPaths:
    checkpoint: Location  # Spark takes its URI as is
    stats: Path
    heartbeat: Path  # exists while a query runs (ops' readiness probe)

    @classmethod
    def of(cls, settings: Settings) -> StreamPaths:
        return cls(
            Location.of(settings.spark.checkpoint_uri or settings.data_path / "stream" / "checkpoint", "spark.checkpoint_uri"),
            settings.path("stream", "stats.jsonl"),
            settings.path("stream", "running"),
        )

    @property
    def state(self) -> Location:
        """The per-user state store: inside the checkpoint, so it is reset with the offsets."""
        return self.checkpoint / "user-state"

    @property
    def fingerprints(self) -> Location:
        """The last records read per partition (``streams.kafka_source.Fingerprints``)."""
        return self.checkpoint / "fingerprints.json"

    @property
    def run_file(self) -> Location:
        """Written by ``--reset-offsets``: this checkpoint's epoch and the offsets it starts from."""
        return self.checkpoint / "run.json"

    def heartbeat_pid(self) -> int | None:
        """The pid the heartbeat names (the job's process while a query runs), or None without one."""
        try:
            return int(self.heartbeat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def run_info(self) -> dict:
        """``{"epoch": n, "starting_offsets": {...} | None}``; epoch 0 for a checkpoint never reset."""
        try:
            return {"epoch": 0, "starting_offsets": None, **json.loads(self.run_file.read_bytes())}
        except FileNotFoundError:
            return {"epoch": 0, "starting_offsets": None}


def default_catalog(settings: Settings) -> Path:
    return settings.data_path / "world" / "items.jsonl"


def start_query(spark, settings: Settings, sink, *, available_now: bool, starting_offsets: str | dict = "earliest",
                checkpoint: Location | None = None, fingerprints: Location | None = None, name: str = "streamrec_features"):
    from streams.spark_session import kafka_stream

    writer = (
        kafka_stream(spark, settings, starting_offsets=starting_offsets, fingerprint_file=fingerprints)
        .writeStream.queryName(name)
        .option("checkpointLocation", str(checkpoint or StreamPaths.of(settings).checkpoint))
        .foreachBatch(sink)
    )
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=f"{settings.spark.trigger_seconds} seconds")
    return writer.start()


def open_sink(settings: Settings, *, catalog: Path | None = None, floor: bool = False, echo=print, on_batch=None, metrics=None):
    """The job's sink over ``settings``' Feast store (definitions applied); ``floor``: no state (see StreamSink)."""
    from features.store import FeatureStoreClient
    from features.stream_sink import StreamSink

    catalog = catalog or default_catalog(settings)
    if not catalog.is_file():
        raise UserError(f"item catalog {catalog} not found (write one with 'streamrec generate' or pass --catalog)")
    paths = StreamPaths.of(settings)
    FeatureStoreClient(settings).apply()
    return StreamSink(
        settings, paths.stats, catalog, state_path=None if floor else paths.state,
        fingerprints=None if floor else paths.fingerprints, epoch=paths.run_info()["epoch"],
        kill_switch=Path(os.environ[KILL_SWITCH_ENV]) if os.environ.get(KILL_SWITCH_ENV) else None,
        lateness_ms=duration_ms(settings.spark.watermark), metrics=metrics, echo=echo, on_batch=on_batch,
    )


class BrokerUnreachable(RuntimeError):
    """Not a ``UserError``: an outage ends, so the supervisor restarts the job (with backoff) until it does."""


CHECK_ATTEMPTS, CHECK_WAIT_S = 3, 5.0  # a broker just restarted may still be loading its data


def check_offsets(settings: Settings, echo=print, attempts: int = CHECK_ATTEMPTS, wait_s: float = CHECK_WAIT_S) -> None:
    """Before the job resumes: the last records it read must still be where it read them, else
    ``OffsetMismatchError`` naming them and the way to resume (see ``features.stream_reset``)."""
    from kafka.errors import KafkaError

    from streams.kafka_source import RESUME_HINT, Fingerprints, OffsetMismatchError, verify_fingerprints
    from streams.kafka_util import BrokerUnavailable

    known = Fingerprints(StreamPaths.of(settings).fingerprints).load()
    for attempt in range(1, attempts + 1):
        try:
            problems = verify_fingerprints(settings.kafka, known)
        except (BrokerUnavailable, KafkaError) as e:  # a bad setting (a UserError) stays final: no crash loop
            raise BrokerUnreachable(f"cannot check the offsets against the broker yet: {e}") from e
        if not problems:
            return
        if attempt < attempts:
            echo(f"stream: offsets do not match the checkpoint yet ({problems[0]}); checking again in {wait_s:g}s")
            time.sleep(wait_s)
    raise OffsetMismatchError(
        "the topic no longer holds what this stream read (recreated, or the broker lost data):\n  "
        + "\n  ".join(problems) + f"\n{RESUME_HINT}"
    )


def partition_lag(progress: dict | None) -> dict[tuple[str, int], int] | None:
    """Records in Kafka not yet processed per (topic, partition), from a query progress (latest minus end)."""
    if not progress or not progress.get("sources"):
        return None
    lag: dict[tuple[str, int], int] = {}
    for source in progress["sources"]:
        end, latest = (json.loads(x) if isinstance(x, str) else x for x in (source.get("endOffset"), source.get("latestOffset")))
        if not end or not latest:
            return None  # e.g. a batch planned without asking the source for its latest offsets
        for topic, parts in latest.items():
            for p, off in parts.items():
                lag[(topic, int(p))] = max(0, int(off) - int(end.get(topic, {}).get(p, 0)))
    return lag


def consumer_lag(progress: dict | None) -> int | None:
    """Records in Kafka not yet processed, summed over partitions."""
    lag = partition_lag(progress)
    return None if lag is None else sum(lag.values())


def run(settings: Settings, *, catalog: Path | None = None, available_now: bool = False, echo=print) -> dict:
    """Run the job until stopped (or, with ``available_now``, until caught up); returns totals."""
    from features.stream_metrics import StreamMetrics
    from streams.spark_session import get_spark, warm_python_workers

    paths = StreamPaths.of(settings)
    check_offsets(settings, echo=echo)
    metrics = StreamMetrics()
    server = metrics.serve(settings.spark.metrics_port) if settings.spark.metrics_port and not available_now else None
    sink = open_sink(settings, catalog=catalog, echo=echo, metrics=metrics)
    spark = get_spark(settings)
    query = start_query(spark, settings, sink, available_now=available_now,
                        starting_offsets=paths.run_info()["starting_offsets"] or "earliest", fingerprints=paths.fingerprints)
    echo(f"stream: query {query.id} running; checkpoint {paths.checkpoint}; stats {paths.stats}"
         + (f"; metrics http://127.0.0.1:{settings.spark.metrics_port}/metrics" if server else ""))
    paths.heartbeat.write_text(f"{os.getpid()} {query.id}")
    warmed = time.monotonic()
    try:
        while query.isActive:
            query.awaitTermination(5)
            if not available_now and time.monotonic() - max(warmed, sink.last_batch_at) > WARM_EVERY_S:
                warm_python_workers(spark)
                warmed = time.monotonic()
            lag = partition_lag(query.lastProgress)
            if lag is not None:
                metrics.set_lag(lag)
                with paths.stats.open("a") as f:
                    f.write(json.dumps({"progress_at": time.time(), "lag": sum(lag.values()),
                                        "lag_by_partition": {f"{t}/{p}": n for (t, p), n in sorted(lag.items())}}) + "\n")
        if query.exception():
            raise _final_error(query.exception()) or query.exception()
    except KeyboardInterrupt:
        query.stop()
    finally:
        paths.heartbeat.unlink(missing_ok=True)
        sink.close()
        if server is not None:
            server.shutdown()
    return summarize_stats(paths.stats)


def _final_error(error: Exception) -> Exception | None:
    """A failure a restart cannot cure, found in Spark's wrapper around a source error: the offset
    mismatch (other errors restart the job, whose ``check_offsets`` then decides)."""
    from streams.kafka_source import OffsetMismatchError

    marker = f"{OffsetMismatchError.__name__}: "
    text = str(error)
    if marker not in text:
        return None
    return OffsetMismatchError(text[text.rindex(marker) + len(marker):].split("\n")[0].strip())


def _read_stats(path: Path) -> tuple[dict[int, dict], dict]:
    """Batch records by id (the last record of a recomputed batch wins) and the latest lag record."""
    if not path.is_file():
        raise UserError(f"no stream stats at {path}: the stream job has not run with this data dir")
    batches: dict[int, dict] = {}
    lag: dict = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "batch_id" in rec:
            batches[rec["batch_id"]] = rec
        else:
            lag = rec
    return batches, lag


def batch_ids(path: Path) -> list[int]:
    return sorted(_read_stats(path)[0]) if path.is_file() else []


def summarize_stats(path: Path, last: int | None = None, first_batch: int = 0) -> dict:
    """Totals, stage means and freshness over the recorded batches (from ``first_batch``, or the ``last`` N):
    the figures the job's ``/metrics`` serves, read from its stats file."""
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

    totals = {k: sum(b.get(k, 0) for b in chosen) for k in
              ("records", "events", "users", "dlq", "invalid", "late", "fold_errors", "duplicates")}
    reasons: dict[str, int] = {}
    stages: dict[str, list[float]] = {}
    for b in chosen:
        for reason, n in b.get("dlq_by_reason", {}).items():
            reasons[reason] = reasons.get(reason, 0) + n
        for stage, seconds in b.get("stage_seconds", {}).items():
            stages.setdefault(stage, []).append(seconds)
    return {"batches": len(chosen), **totals, "dlq_by_reason": reasons,
            "mean_stage_ms": {stage: round(1000 * float(np.mean(v)), 1) for stage, v in stages.items()},
            "freshness_event_ms": agg("freshness_event_ms"), "freshness_ingest_ms": agg("freshness_ingest_ms"),
            "consumer_lag": lag.get("lag"), "consumer_lag_by_partition": lag.get("lag_by_partition")}
