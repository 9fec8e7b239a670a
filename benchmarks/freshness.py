"""``streamrec bench freshness``: event -> online-visible latency of the stream job at fixed rates.

For each rate, a publisher process sends synthetic events stamped "now" through the SDK for
``--seconds`` (after ``--warmup``), while the stream job runs into a Feast store of its own
(a scratch data dir, fresh topics) on the configured online store (the embedded Redis by
default). Then the same is run for the engine's stateless floor: the same source and sink,
keeping only each user's latest event of a batch, with no state. Reported per run: processed
rate, consumer lag (and whether it grew), mean milliseconds per batch stage (``spark``: Spark
executes the batch, i.e. plans it and reads Kafka; ``fold``: parse, screen, fold; ``online``:
the online write; ``state``, ``offline``, ``publish``: the rest of the sink), and event time ->
online percentiles over every folded event.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import random
import time
import uuid

import numpy as np

from streamrec.config import Settings
from streamrec.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rates", default="1000,5000,10000", help="comma-separated events per second to publish")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to measure at each rate")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of load before measuring (Spark's first batches are cold)")
    parser.add_argument("--users", type=int, default=2000, help="distinct users the events spread over")
    parser.add_argument("--trigger", type=float, help="micro-batch trigger in seconds (default: spark.trigger_seconds)")
    parser.add_argument("--no-floor", action="store_true", help="skip the stateless-floor runs")


def _publish(settings: Settings, items: list[str], users: int, rate: int, stop, sent) -> None:
    """A separate process, so publishing does not take the stream driver's Python time."""
    from streams.producer import EventProducer

    rng = random.Random(1)
    devices = ("phone", "tablet", "tv", "desktop")
    with EventProducer(settings, source="bench-freshness") as producer:
        t0, n = time.monotonic(), 0
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
            sent.value = n
            time.sleep(0.005)


def _run_once(spark, settings: Settings, args, rate: int, floor: bool, items: list[str], catalog) -> dict:
    from features import stream_job
    from streams.kafka_util import ensure_topics

    tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{rate}-{'floor' if floor else 'job'}"
    kafka = dataclasses.replace(
        settings.kafka, events_topic=f"bench-events-{tag}", dlq_topic=f"bench-dlq-{tag}", features_topic=f"bench-features-{tag}"
    )
    spark_cfg = dataclasses.replace(settings.spark, trigger_seconds=args.trigger or settings.spark.trigger_seconds)
    run = dataclasses.replace(settings, kafka=kafka, spark=spark_cfg, data_dir=str(settings.data_path / "bench" / f"freshness-{tag}"))
    ensure_topics(kafka)

    measuring = [False]
    batches: list[dict] = []
    ages: list[np.ndarray] = []

    def on_batch(stats: dict, event_age_ms: np.ndarray) -> None:
        if measuring[0]:
            batches.append(stats)
            ages.append(event_age_ms)

    sink = stream_job.open_sink(run, catalog=catalog, floor=floor, echo=lambda *_: None, on_batch=on_batch)
    query = stream_job.start_query(spark, run, sink, available_now=False, starting_offsets="latest", name=f"bench_{tag}".replace("-", "_"))
    ctx = multiprocessing.get_context("spawn")
    stop, sent = ctx.Event(), ctx.Value("q", 0)
    publisher = ctx.Process(target=_publish, args=(run, items, args.users, rate, stop, sent), daemon=True)
    publisher.start()
    label = "stateless floor" if floor else "stream job"
    try:
        started = time.monotonic()
        while not stream_job.batch_ids(stream_job.StreamPaths.of(run).stats):
            if not query.isActive or time.monotonic() - started > 300:
                raise UserError(f"the stream job finished no batch in {time.monotonic() - started:.0f}s: {query.exception()}")
            time.sleep(0.5)
        time.sleep(args.warmup)
        measuring[0] = True
        t0, sent0, first = time.monotonic(), sent.value, query.lastProgress["batchId"] if query.lastProgress else -1
        lags = []
        while time.monotonic() - t0 < args.seconds:
            time.sleep(5)
            lags.append(stream_job.consumer_lag(query.lastProgress))
            print(f"  {rate} events/s, {label}: {time.monotonic() - t0:.0f}s, published {sent.value - sent0}, lag {lags[-1]}", flush=True)
        elapsed, published = time.monotonic() - t0, sent.value - sent0
        measuring[0] = False
        progress = [p for p in query.recentProgress if p["batchId"] > first]
    finally:
        stop.set()
        publisher.join(10)
        _stop_quietly(spark, query)
        sink.close()
    processed = sum(p["numInputRows"] for p in progress)
    age = np.concatenate(ages) if ages else np.array([])
    stages = {s: round(1000 * float(np.mean([b["stage_seconds"][s] for b in batches])), 1) for s in batches[0]["stage_seconds"]} if batches else {}
    return {
        "rate": rate, "run": label, "published_per_s": round(published / elapsed), "processed_per_s": round(processed / elapsed),
        "batches": len(batches), "mean_cycle_ms": round(1000 * elapsed / max(len(batches), 1)),
        "mean_records_per_batch": round(float(np.mean([b["records"] for b in batches])), 1) if batches else 0,
        "mean_stage_ms": stages,
        "event_to_online_ms": {f"p{q}": round(float(np.percentile(age, q))) for q in (50, 95, 99)} if len(age) else {},
        "events_measured": int(len(age)),
        "lag_first_last": [lags[0], lags[-1]] if lags else None,
        "lag_max": max((x for x in lags if x is not None), default=None),
    }


def _stop_quietly(spark, query) -> None:
    """Stop between micro-batches: stopping inside one interrupts the sink, which Spark, py4j and the
    Python daemon each report with a long stack trace that says nothing about the measurement."""
    deadline = time.monotonic() + 60
    while query.status["isTriggerActive"] and time.monotonic() < deadline:
        time.sleep(0.02)
    jvm = spark.sparkContext._jvm
    configurator, level = jvm.org.apache.logging.log4j.core.config.Configurator, jvm.org.apache.logging.log4j.Level
    root = jvm.org.apache.logging.log4j.LogManager.getRootLogger().getName()
    py4j_log = logging.getLogger("py4j")
    configurator.setLevel(root, level.OFF)
    py4j_log.setLevel(logging.CRITICAL)
    try:
        query.stop()
    finally:
        configurator.setLevel(root, level.WARN)
        py4j_log.setLevel(logging.NOTSET)


def _table(results: list[dict]) -> str:
    stages = list(results[0]["mean_stage_ms"]) if results and results[0]["mean_stage_ms"] else []
    head = ["rate", "run", "processed/s", "lag first→last (max)", "cycle ms", *[f"{s} ms" for s in stages], "p50 ms", "p95 ms", "p99 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in results:
        f = r["event_to_online_ms"]
        lag = "→".join(str(x) for x in r["lag_first_last"]) + f" ({r['lag_max']})" if r["lag_first_last"] else "?"
        lines.append("| " + " | ".join(str(x) for x in [
            f"{r['rate']:,}", r["run"], f"{r['processed_per_s']:,}", lag, r["mean_cycle_ms"],
            *[r["mean_stage_ms"].get(s, "") for s in stages], f.get("p50"), f.get("p95"), f.get("p99")]) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack
    from streamrec.catalog import load_items
    from streams.generator import generate_world
    from streams.spark_session import get_spark

    try:
        rates = [int(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        raise UserError(f"--rates: expected comma-separated integers, got {args.rates!r}") from None
    stack.up(settings, only=["broker", "redis"], echo=lambda *_: None)  # the stack's own; topics and state are the runs'
    catalog = settings.data_path / "bench" / "freshness-catalog" / "items.jsonl"
    generate_world(catalog.parent, users=10, items=500, days=0.05, seed=1)  # only its catalog is used
    items = list(load_items(catalog))
    spark = get_spark(settings)
    print(f"bench freshness: rates {rates} events/s, {args.seconds:.0f}s each (+{args.warmup:.0f}s warm-up), {args.users} users, "
          f"online store {settings.feast.online_store}, trigger {args.trigger or settings.spark.trigger_seconds}s, "
          f"max {settings.spark.max_events_per_trigger} events/trigger", flush=True)
    results = []
    for rate in rates:
        for floor in (False,) if args.no_floor else (False, True):
            results.append(_run_once(spark, settings, args, rate, floor, items, catalog))
            print(json.dumps(results[-1]), flush=True)
    print("\n" + _table(results))
    for rate in rates:
        job = next(r for r in results if r["rate"] == rate and r["run"] == "stream job")
        floor_run = next((r for r in results if r["rate"] == rate and r["run"] == "stateless floor"), None)
        if floor_run and floor_run["event_to_online_ms"] and job["event_to_online_ms"]:
            print(f"{rate:,} events/s: stream job / floor p99 = {job['event_to_online_ms']['p99'] / floor_run['event_to_online_ms']['p99']:.2f}, "
                  f"cycle {job['mean_cycle_ms'] / max(floor_run['mean_cycle_ms'], 1):.2f}")
    return 0
