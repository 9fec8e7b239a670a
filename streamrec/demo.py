"""``streamrec demo``: the whole pipeline on embedded defaults, step by step.

Every step prints what it did; the figures printed come from this run.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from streamrec.config import Settings


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def _done(t0: float) -> None:
    print(f"   ({time.monotonic() - t0:.1f}s)", flush=True)


def consume_summary(settings: Settings) -> dict:
    """Read the events topic back and summarize what arrived."""
    from streams.kafka_util import read_topic

    types: Counter = Counter()
    partitions: Counter = Counter()
    users_per_partition: dict[int, set] = {}
    for rec in read_topic(settings.kafka, settings.kafka.events_topic):
        event = json.loads(rec.value)
        types[event["event_type"]] += 1
        partitions[rec.partition] += 1
        users_per_partition.setdefault(rec.partition, set()).add(rec.key)
    dlq = sum(1 for _ in read_topic(settings.kafka, settings.kafka.dlq_topic))
    users = set().union(*users_per_partition.values()) if users_per_partition else set()
    # keyed by user: a user's events must all sit in one partition
    split_users = sum(1 for u in users if sum(u in s for s in users_per_partition.values()) > 1)
    return {
        "events": sum(types.values()),
        "by_type": dict(types),
        "by_partition": dict(sorted(partitions.items())),
        "users": len(users),
        "users_split_across_partitions": split_users,
        "dlq": dlq,
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack
    from streams.generator import generate_world
    from streams.replay import replay

    world_dir = Path(args.world_dir) if args.world_dir else settings.data_path / "world"

    t0 = _step("1/4 infra up: embedded broker, topics")
    stack.up(settings)
    _done(t0)

    t0 = _step(f"2/4 generate a synthetic world ({args.users} users, {args.items} items, {args.days} days, seed {args.seed})")
    summary = generate_world(world_dir, users=args.users, items=args.items, days=args.days, seed=args.seed)
    print("   " + json.dumps(summary, default=str))
    _done(t0)

    t0 = _step("3/4 replay the event log into Kafka")
    stats = replay(settings, world_dir / "events.jsonl")
    print(f"   {stats}")
    _done(t0)

    t0 = _step("4/4 consume the topics back")
    print("   " + json.dumps(consume_summary(settings)))
    _done(t0)
    print("\ndemo done. Stop the stack with: streamrec infra down")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on embedded defaults")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--world-dir", help="where the synthetic world is written (default: <data_dir>/world)")
    p.set_defaults(func=run)
