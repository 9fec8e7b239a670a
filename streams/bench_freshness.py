"""``streamrec bench freshness``: event -> online-visible latency of the streaming job at a fixed rate.

Publishes synthetic events stamped "now" through the SDK at ``--rate`` events/s
for ``--seconds``, while the stream job runs with a processing-time trigger
into a Feast store of its own (a scratch data dir, fresh topics). The sink
measures, per batch, the time from each updated user's newest event (event
time, and broker append time) to the moment its row is written online.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import threading
import time
import uuid

from streamrec.config import Settings
from streamrec.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, default=1000, help="events per second to publish")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to publish")
    parser.add_argument("--users", type=int, default=2000, help="distinct users the events spread over")
    parser.add_argument("--trigger", type=float, help="micro-batch trigger in seconds (default: spark.trigger_seconds)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before measuring (Spark's first batches are cold)")


def _publisher(settings: Settings, items: list[str], users: int, rate: int, stop: threading.Event, sent: list) -> None:
    from streams.producer import EventProducer

    rng = random.Random(1)
    devices = ("phone", "tablet", "tv", "desktop")
    with EventProducer(settings, source="bench-freshness") as producer:
        tick, t0, n = 0.01, time.monotonic(), 0
        while not stop.is_set():
            due = int((time.monotonic() - t0) * rate)
            now_ms = time.time_ns() // 1_000_000
            for _ in range(due - n):
                user = rng.randrange(users)
                kind = "watch" if rng.random() < 0.4 else "click"
                event = {
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "event_type": kind, "user_id": f"b{user:06d}", "item_id": rng.choice(items), "ts": now_ms,
                    "device": devices[user % 4], "session_id": f"b{user:06d}-s",
                }
                if kind == "watch":
                    event["watch_seconds"] = float(rng.randint(60, 3600))
                producer.send(event)
            n = max(n, due)
            sent[0] = n
            time.sleep(tick)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack
    from streams import stream_job
    from streams.generator import generate_world
    from streams.spark_session import get_spark
    from streams.stream_sink import FeastSink
    from features.store import FeatureStoreClient
    from streams.kafka_util import ensure_topics

    tag = time.strftime("%Y%m%d-%H%M%S")
    kafka = dataclasses.replace(
        settings.kafka, events_topic=f"bench-events-{tag}", dlq_topic=f"bench-dlq-{tag}", features_topic=f"bench-features-{tag}"
    )
    spark_cfg = dataclasses.replace(settings.spark, trigger_seconds=args.trigger or settings.spark.trigger_seconds)
    bench = dataclasses.replace(settings, kafka=kafka, spark=spark_cfg, data_dir=str(settings.data_path / "bench" / f"freshness-{tag}"))
    # The broker is the stack's own (started if embedded and down); topics and state are the run's.
    stack.up(settings, only=["broker"], echo=lambda *_: None)
    ensure_topics(kafka)
    catalog = bench.data_path / "world" / "items.jsonl"
    generate_world(catalog.parent, users=10, items=500, days=0.05, seed=1)  # only its catalog is used
    items = [json.loads(line)["item_id"] for line in catalog.open()]

    paths = stream_job.StreamPaths.of(bench)
    FeatureStoreClient(bench).apply()
    sink = FeastSink(bench, paths.stats, echo=lambda *_: None)
    spark = get_spark(bench)
    print(f"bench freshness: {args.rate} events/s for {args.seconds:.0f}s (+{args.warmup:.0f}s warm-up) over {args.users} users, "
          f"trigger {spark_cfg.trigger_seconds}s, max {spark_cfg.max_events_per_trigger} events/trigger", flush=True)
    query = stream_job.start_query(spark, bench, sink, catalog=catalog, available_now=False, starting_offsets="latest")

    stop, sent = threading.Event(), [0]
    publisher = threading.Thread(target=_publisher, args=(bench, items, args.users, args.rate, stop, sent), daemon=True)
    publisher.start()
    started = time.monotonic()
    while not stream_job.batch_ids(paths.stats):  # the first batch also starts Spark's Python workers
        if not query.isActive or time.monotonic() - started > 300:
            stop.set()
            raise UserError(f"the stream job finished no batch in {time.monotonic() - started:.0f}s: {query.exception()}")
        time.sleep(1)
    print(f"  first batch done after {time.monotonic() - started:.0f}s; warming up", flush=True)
    time.sleep(args.warmup)
    first_batch = max(stream_job.batch_ids(paths.stats), default=-1) + 1
    measured_from, sent_before = time.monotonic(), sent[0]
    while time.monotonic() - measured_from < args.seconds:
        time.sleep(5)
        print(f"  published {sent[0]} events, lag {stream_job.consumer_lag(query.lastProgress)}", flush=True)
    elapsed, published = time.monotonic() - measured_from, sent[0] - sent_before
    progress = [p for p in query.recentProgress if p["batchId"] >= first_batch]
    stop.set()
    publisher.join()
    query.stop()
    sink.close()

    summary = stream_job.summarize_stats(paths.stats, first_batch=first_batch)
    processed = sum(p["numInputRows"] for p in progress)
    batch_ms = [p["durationMs"].get("triggerExecution", 0) for p in progress]
    print(json.dumps({
        "rate_target": args.rate, "published_per_s": round(published / elapsed, 1),
        "processed_per_s": round(processed / elapsed, 1) if progress else None,
        "batches": summary["batches"], "mean_batch_ms": round(sum(batch_ms) / len(batch_ms)) if batch_ms else None,
        "event_to_online_ms": summary["freshness_event_ms"], "append_to_online_ms": summary["freshness_ingest_ms"],
        "final_consumer_lag": stream_job.consumer_lag(query.lastProgress),
    }, indent=2))
    return 0
