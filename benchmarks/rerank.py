"""``streamrec bench rerank``: context change → re-ranked list in the cache, through the refresh worker.

On a synthetic stack (``benchmarks.stack``: a world ending now, Redis, the model server) the API's own
services run in this process (``app.build_services``) with the configured LLM (the embedded one by default,
started on a free port). Users change context at a steady rate: a change is the user's online feature row as
the stream job leaves it after an event on another device now (written to the online store, then handed to
the worker's queue as its Kafka consumer would). The worker's own loop runs as in production — take what
arrived, refresh for ``POLL_BUDGET_S``, look again — and the figure per change is the time from the hand-over
until the worker's refresh for it returned the re-rank applied or cached. The stream job's event → online
row latency comes before this (``streamrec bench freshness``).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from streamrec.config import Settings
from streamrec.vocabulary import DEVICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--changes", type=int, default=120, help="context changes to measure (default 120)")
    parser.add_argument("--rate", type=float, default=2.0, help="context changes per second (default 2)")
    parser.add_argument("--users", type=int, default=300, help="users in the synthetic world (default 300)")
    parser.add_argument("--items", type=int, default=1000, help="catalog size (default 1000)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from benchmarks.stack import synthetic_stack
    from infra.llm import embedded_server
    from streamrec.errors import UserError

    if args.changes < 1 or not args.rate > 0 or args.users < 1 or args.items < 1:
        raise UserError("--changes, --users and --items must be at least 1 and --rate above 0")
    with synthetic_stack(settings, args.items, args.users) as stack, \
            embedded_server(stack.settings, "bench-rerank-llm") as bench_settings:
        result = _measure(bench_settings, stack.world_dir, args)
    print(json.dumps(result, indent=2))
    return 0


def _measure(settings: Settings, world_dir, args: argparse.Namespace) -> dict:
    from features.store import FeatureStoreClient
    from serving.app import build_services
    from serving.metrics import counts
    from serving.worker import POLL_BUDGET_S, RefreshWorker

    services = build_services(settings)
    done: dict[int, tuple[float, str]] = {}

    class Timed(RefreshWorker):
        def handle(self, row: dict) -> str:
            status = "error"  # what a raising refresh counts as (drain logs and goes on)
            try:
                status = super().handle(row)
            finally:
                done[row["bench_change"]] = (time.monotonic(), status)
            return status

    worker = Timed(settings, services.pipeline, services.reranker, services.metrics, clock=time.time)
    store = FeatureStoreClient(settings)
    users = [json.loads(line)["user_id"] for line in (world_dir / "users.jsonl").open()]
    # Users with live features: a change is an event after others (the stream job writes whole rows only).
    users = [u for u, row in zip(users, store.online_features(users)) if row.get("last_event_ts_ms") is not None]
    rng = np.random.default_rng(0)
    # Distinct users while there are enough: a second change of a waiting user would replace the first.
    picked = rng.choice(users, size=args.changes, replace=args.changes > len(users))
    calls_before = sum(counts(services.reranker.metrics.llm_calls).values())
    print(f"bench rerank: {args.changes} context changes at {args.rate:g}/s, model {services.reranker.model}, "
          f"mode {services.reranker.mode}", flush=True)
    start = time.monotonic()
    arrived: dict[int, float] = {}
    n = shown = 0
    try:
        while n < args.changes or worker._waiting:
            now = time.monotonic()
            while n < args.changes and start + n / args.rate <= now:  # what a poll would return now
                arrived[n] = time.monotonic()
                worker.add(json.dumps(_changed_row(store, str(picked[n]), n, rng)).encode())
                n += 1
            if worker._waiting:
                worker.drain(time.monotonic() + POLL_BUDGET_S)
            else:
                time.sleep(min(0.5, max(start + n / args.rate - time.monotonic(), 0.001)))
            if len(done) >= shown + 20:
                shown = len(done)
                print(f"  {shown}/{args.changes} refreshed in {time.monotonic() - start:.0f}s", flush=True)
    finally:
        services.close()
    lags = np.array([(done[i][0] - arrived[i]) * 1000.0 for i in sorted(done)])
    statuses = [done[i][1] for i in sorted(done)]
    return {
        "changes": args.changes, "refreshed": len(done), "superseded_or_dropped": args.changes - len(done),
        "rate_per_s": args.rate, "model": services.reranker.model,
        "mode": services.reranker.mode, "poll_budget_s": POLL_BUDGET_S,
        "llm_calls": sum(counts(services.reranker.metrics.llm_calls).values()) - calls_before,
        "ms_p50": round(float(np.percentile(lags, 50)), 1), "ms_p95": round(float(np.percentile(lags, 95)), 1),
        "ms_max": round(float(lags.max()), 1),
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
    }


def _changed_row(store, user: str, change: int, rng: np.random.Generator) -> dict:
    """The user's online row after an event now on another device, written online as the stream job does."""
    row = dict(store.online_features([user])[0])
    now_ms = int(time.time() * 1000)
    row.update(user_id=user, last_event_ts_ms=now_ms,
               last_device=str(rng.choice([d for d in DEVICES if d != row.get("last_device")])))
    store.write_session_online({k: [v] for k, v in row.items()})
    return row | {"bench_change": change}
