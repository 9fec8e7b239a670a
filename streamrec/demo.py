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
from streamrec.errors import UserError

SHOW_USERS = 3


class Steps:
    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, None

    def __call__(self, title: str) -> None:
        self.done()
        self.n += 1
        self.t0 = time.monotonic()
        print(f"\n== {self.n}/{self.total} {title}", flush=True)

    def done(self) -> None:
        if self.t0 is not None:
            print(f"   ({time.monotonic() - self.t0:.1f}s)", flush=True)
            self.t0 = None


def consume_summary(settings: Settings) -> dict:
    """Read the events topic back and summarize what arrived."""
    from streams.kafka_util import read_topic

    types: Counter = Counter()
    partitions: Counter = Counter()
    partition_of: dict[bytes, set] = {}
    for rec in read_topic(settings.kafka, settings.kafka.events_topic):
        types[json.loads(rec.value)["event_type"]] += 1
        partitions[rec.partition] += 1
        partition_of.setdefault(rec.key, set()).add(rec.partition)
    dlq = sum(1 for _ in read_topic(settings.kafka, settings.kafka.dlq_topic))
    return {
        "events": sum(types.values()),
        "by_type": dict(types),
        "by_partition": dict(sorted(partitions.items())),
        "users": len(partition_of),
        "users_split_across_partitions": sum(len(p) > 1 for p in partition_of.values()),  # keyed by user: must be 0
        "dlq": dlq,
    }


def latest_event_per_user(events_path: Path) -> dict[str, int]:
    latest: dict[str, int] = {}
    with events_path.open() as f:
        for line in f:
            e = json.loads(line)
            latest[e["user_id"]] = max(latest.get(e["user_id"], 0), e["ts"])
    return latest


def wait_until_online(settings: Settings, expected: dict[str, int], timeout_s: float = 900.0) -> float:
    """Poll the online store until every user's features include their latest event; returns seconds waited."""
    from features.store import FeatureStoreClient

    store, users, t0 = FeatureStoreClient(settings), sorted(expected), time.monotonic()
    while True:
        rows = store.online_features(users)
        behind = [u for u, r in zip(users, rows) if (r.get("last_event_ts_ms") or 0) < expected[u]]
        if not behind:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise UserError(f"stream job still behind for {len(behind)} users after {timeout_s:.0f}s; see {settings.data_path / 'log' / 'stream.log'}")
        print(f"   waiting for the stream job: {len(users) - len(behind)}/{len(users)} users up to date", flush=True)
        time.sleep(5)


def describe_live(row: dict) -> str:
    from features.context import GENRE_SLUGS

    affinities = sorted(((row.get(f"aff_{g}") or 0.0, g) for g in GENRE_SLUGS), reverse=True)
    top = ", ".join(f"{g} {v:.2f}" for v, g in affinities[:3] if v > 0) or "none"
    return (
        f"{row['user_id']}: top decayed genres [{top}]; session {row['session_events']} events / "
        f"{row['session_length_s']:.0f}s on {row['last_device']} ({row['daypart']}); last items {row['last_items'][:3]}"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import pandas as pd

    from features.store import FeatureStoreClient, event_times
    from infra import stack
    from streams.generator import generate_world
    from streams.replay import replay
    from streams.stream_job import StreamPaths, summarize_stats

    world = settings.data_path / "world"
    step = Steps(total=6)

    step("infra up: embedded broker, LLM server, model server")
    stack.up(settings, only=["broker", "redis", "llm", "model-server"])

    step(f"generate a synthetic world ({args.users} users, {args.items} items, {args.days} days, seed {args.seed})")
    summary = generate_world(world, users=args.users, items=args.items, days=args.days, seed=args.seed)
    print("   " + json.dumps({k: v for k, v in summary.items() if k != "paths"}, default=str))

    step("Feast: register the feature repo, load the catalog and user profiles")
    store = FeatureStoreClient(settings)
    store.apply()
    events = pd.read_json(world / "events.jsonl", lines=True, dtype=False, convert_dates=False)
    print(f"   items: {store.load_catalog(world / 'items.jsonl')}; "
          f"profiles: {store.build_profiles(events, cut=event_times(events['ts']).max())}")

    step("replay the event log into Kafka, read it back")
    print(f"   {replay(settings, world / 'events.jsonl').summary()}")
    print("   " + json.dumps(consume_summary(settings)))

    step("stream job (Spark Structured Streaming) -> live features in Feast")
    stack.up(settings, only=["stream"])
    waited = wait_until_online(settings, latest_event_per_user(world / "events.jsonl"))
    print(f"   all users' online features current after {waited:.0f}s more")
    print("   " + json.dumps(summarize_stats(StreamPaths.of(settings).stats)))
    sample = sorted(latest_event_per_user(world / "events.jsonl"))[:SHOW_USERS]
    for row in store.online_features(sample):
        print("   " + describe_live(row))

    step.done()
    print("\ndemo done; the stack keeps running: streamrec infra status | streamrec infra down")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on embedded defaults")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run)
