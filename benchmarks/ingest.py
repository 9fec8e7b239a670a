"""``streamrec bench ingest``: events/s through raw kafka-python vs through the validating SDK.

Both paths send the same pre-serialized events with the same producer options
(``open_kafka_producer``, partitioner included), each to a fresh topic; the SDK
path also validates and re-serializes every event. Rounds alternate which
path goes first and the ratio is the median of the rounds' ratios, so a
neighbour's load burst skews one round, not the result.
Target: SDK >= 90 % of raw; exit code 1 when it is missed.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import random
import statistics
import time
import uuid
from typing import Any

TARGET_RATIO = 0.90
PROGRESS_STEP = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=200_000, help="events per path and round (default: 200000)")
    parser.add_argument("--rounds", type=int, default=3, help="raw/SDK pairs, alternating which goes first (default: 3)")
    parser.add_argument("--seed", type=int, default=1)


def make_events(n: int, seed: int, end_ms: int) -> list[tuple[bytes, bytes]]:
    """``n`` valid events as (user key, JSON bytes), deterministic for a seed, one second apart up to ``end_ms``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user = f"u{rng.randrange(2000)}"
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "event_type": "click" if i % 3 == 0 else "watch",
            "user_id": user,
            "item_id": f"i{rng.randrange(5000)}",
            "ts": end_ms - (n - i) * 1000,
            "device": rng.choice(("phone", "tablet", "tv", "desktop")),
            "session_id": f"{user}-s{i // 50}",
            "context": {"page": rng.choice(("home", "search", "detail"))},
        }
        if event["event_type"] == "watch":
            event["watch_seconds"] = round(rng.uniform(0, 3600), 1)
        out.append((user.encode(), json.dumps(event, separators=(",", ":")).encode()))
    return out


@dataclasses.dataclass
class Run:
    seconds: float
    cpu_seconds: float  # this process, all threads: a steadier gauge than wall time on a shared machine


def _timed(send, flush, events, desc: str) -> Run:
    """Hand every event to ``send``, then wait until the broker acknowledged them all."""
    from tqdm import tqdm

    with tqdm(total=len(events), desc=desc, unit="ev", unit_scale=True, leave=False) as bar:
        started, cpu_started = time.perf_counter(), time.process_time()
        for i, (key, value) in enumerate(events, 1):
            send(key, value)
            if i % PROGRESS_STEP == 0:
                bar.update(PROGRESS_STEP)
        flush()
        return Run(time.perf_counter() - started, time.process_time() - cpu_started)


def _raw_run(settings, events, topic: str) -> Run:
    from streams.producer import open_kafka_producer

    producer = open_kafka_producer(settings.kafka)
    try:
        return _timed(lambda key, value: producer.send(topic, value, key=key), producer.flush, events, "raw")
    finally:
        producer.close()


def _sdk_run(settings, events, topic: str) -> Run:
    from streamrec.errors import UserError
    from streams.producer import EventProducer

    kafka = dataclasses.replace(settings.kafka, events_topic=topic, dlq_topic=f"{topic}-dlq")
    with EventProducer(dataclasses.replace(settings, kafka=kafka), source="bench") as producer:
        run = _timed(lambda key, value: producer.send(value), producer.flush, events, "SDK")
    if producer.rejected:
        raise UserError(f"the SDK rejected {producer.rejected} benchmark events: {dict(producer.reasons)}")
    return run


def _line(name: str, run: Run, n: int) -> str:
    return f"{name} {n / run.seconds:8,.0f} events/s ({run.cpu_seconds / n * 1e6:5.1f} us CPU/event)"


def run(args: argparse.Namespace, settings) -> int:
    from streamrec.errors import UserError
    from streams.kafka_util import ensure_topics
    from streams.producer import producer_options

    if args.events < 1 or args.rounds < 1:
        raise UserError(f"--events and --rounds must be at least 1 (got {args.events}, {args.rounds})")
    n = args.events
    events = make_events(n, args.seed, end_ms=time.time_ns() // 1_000_000)
    gc.freeze()  # the in-memory events are the benchmark's own; keep the collector from rescanning them
    opts = producer_options(settings.kafka)
    print(
        f"{n} events of {sum(len(v) for _, v in events) / n:.0f} bytes on average, {args.rounds} round(s); "
        f"{settings.kafka.partitions} partitions, acks={opts['acks']} linger_ms={opts['linger_ms']} "
        f"batch_size={opts['batch_size']}"
    )
    tag = uuid.uuid4().hex[:8]
    raws, sdks = [], []
    for round_no in range(1, args.rounds + 1):
        raw_topic, sdk_topic = f"bench-raw-{tag}-{round_no}", f"bench-sdk-{tag}-{round_no}"
        ensure_topics(settings.kafka, [raw_topic, sdk_topic, f"{sdk_topic}-dlq"])
        if round_no % 2:
            raws.append(_raw_run(settings, events, raw_topic))
            sdks.append(_sdk_run(settings, events, sdk_topic))
        else:
            sdks.append(_sdk_run(settings, events, sdk_topic))
            raws.append(_raw_run(settings, events, raw_topic))
        print(f"round {round_no}: {_line('raw', raws[-1], n)} | {_line('SDK', sdks[-1], n)} | "
              f"SDK/raw {raws[-1].seconds / sdks[-1].seconds:.1%}")
    ratio = statistics.median(r.seconds / s.seconds for r, s in zip(raws, sdks))
    print(f"raw kafka-python: {statistics.median(n / r.seconds for r in raws):10,.0f} events/s (median)")
    print(f"SDK (validating): {statistics.median(n / s.seconds for s in sdks):10,.0f} events/s (median)")
    print(f"SDK / raw: {ratio:.1%} (median of rounds; target >= {TARGET_RATIO:.0%}: "
          f"{'met' if ratio >= TARGET_RATIO else 'MISSED'})")
    return 0 if ratio >= TARGET_RATIO else 1
