"""``streamrec demo``: the whole pipeline on embedded defaults, step by step.

Every step prints what it did; the figures printed come from this run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter

from streamrec.config import Settings
from streamrec.errors import UserError
from streamrec.pseudonyms import pseudonymizer

SHOW_USERS = 3
WORLD_END_MARGIN_MS = 3_600_000


class Steps:
    def __init__(self, total: int):
        self.total, self.n = total, 0
        self.t0: float | None = None

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


def wait_until_online(settings: Settings, expected: dict[str, int], timeout_s: float = 900.0, poll_s: float = 1.0,
                      since: float | None = None) -> float:
    """Poll the online store until every user's features (``expected``: by the users' own ids) include their
    latest event; returns the seconds since ``since`` (a ``time.monotonic()`` reading; default: now). Progress is
    printed every 5 s."""
    from features.store import FeatureStoreClient

    store, users = FeatureStoreClient(settings), sorted(expected)
    hide = pseudonymizer(settings)
    t0 = time.monotonic() if since is None else since
    shown = time.monotonic()
    while True:
        rows = store.online_features([hide(u) for u in users])
        behind = [u for u, r in zip(users, rows) if (r.get("last_event_ts_ms") or 0) < expected[u]]
        if not behind:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise UserError(f"stream job still behind for {len(behind)} users after {timeout_s:.0f}s; see {settings.data_path / 'log' / 'stream.log'}")
        if time.monotonic() - shown > 5:
            print(f"   waiting for the stream job: {len(users) - len(behind)}/{len(users)} users up to date", flush=True)
            shown = time.monotonic()
        time.sleep(poll_s)


def describe_live(row: dict) -> str:
    from streamrec.vocabulary import GENRE_SLUGS

    affinities = sorted(((row.get(f"aff_{g}") or 0.0, g) for g in GENRE_SLUGS), reverse=True)
    top = ", ".join(f"{g} {v:.2f}" for v, g in affinities[:3] if v > 0) or "none"
    return (
        f"{row['user_id']}: top decayed genres [{top}]; session {row['session_events']} events / "
        f"{row['session_length_s']:.0f}s on {row['last_device']} ({row['daypart']}); last items {row['last_items'][:3]}"
    )


def burst_events(users: list[str], items: list[dict], now_ms: int) -> list[dict]:
    """A context-changing burst: each user, on a phone late at night, binges short comedies."""
    import uuid

    comedies = sorted((i for i in items if "Comedy" in i["genres"]), key=lambda i: i["duration_minutes"])[:20]
    events = []
    for u, user in enumerate(users):
        for n in range(4):
            item = comedies[(u * 4 + n) % len(comedies)]
            ts = now_ms - (4 - n) * 60_000
            base = {"user_id": user, "item_id": item["item_id"], "device": "phone", "session_id": f"{user}-demo-burst"}
            events.append({**base, "event_id": str(uuid.uuid4()), "event_type": "click", "ts": ts})
            events.append({**base, "event_id": str(uuid.uuid4()), "event_type": "watch", "ts": ts + 20_000,
                           "watch_seconds": float(item["duration_minutes"] * 60 * 0.9)})
    return events


def recommend(settings: Settings, headers: dict, user: str, k: int = 5, wait_rerank_s: float = 0.0) -> dict:
    """GET /recommend; with ``wait_rerank_s``, ask again until the LLM re-rank is served (or time runs out)."""
    import httpx

    s = settings.serving
    url = f"http://127.0.0.1:{s.port}/recommend"
    deadline = time.monotonic() + wait_rerank_s
    while True:
        body = httpx.get(url, params={"user_id": user, "k": k, "compare": "true"}, headers=headers,
                         timeout=60).raise_for_status().json()
        if body["rerank"]["applied"] or time.monotonic() >= deadline:
            return body
        time.sleep(3)


def ui_url(settings: Settings, user: str) -> str:
    """The web page's URL for ``user``, with a token to read every viewer and publish events in its fragment
    (a fragment never reaches a server, so the token is in no access log)."""
    from urllib.parse import urlencode

    from streamrec.auth import bearer_header

    fragment = {"user": user}
    header = bearer_header(settings, ["recommend:any", "events:write"], name="web-page", ttl_days=1)
    if header:  # none when auth is off
        fragment["token"] = header["Authorization"].removeprefix("Bearer ")
    return f"http://127.0.0.1:{settings.serving.port}/ui/#{urlencode(fragment)}"


def show_tokens(settings: Settings, user: str) -> dict:
    """Mint and print the tokens the demo uses and one to try; the headers of the demo's own."""
    from streamrec.auth import bearer_header, secret_path

    if not settings.auth.enabled:
        print("   auth is off (auth.enabled: false): no token needed")
        return {}
    service = bearer_header(settings, ["recommend:any"], name="demo", ttl_days=1)
    viewer = bearer_header(settings, ["recommend:read"], user=user, ttl_days=1)["Authorization"]
    signer = "auth.secret" if settings.auth.secret else secret_path(settings)
    print(f"   tokens (signed with {signer}; mint more: streamrec auth token --scope ... [--user ...]):")
    print(f"     recommend:any, the demo's own (reads every user): {service['Authorization'].removeprefix('Bearer ')}")
    print(f"     recommend:read for {user} only: {viewer.removeprefix('Bearer ')}")
    print(f"     try: curl -H 'Authorization: {viewer}' 'http://127.0.0.1:{settings.serving.port}/recommend?user_id={user}&k=5'")
    return service


def show_recommendations(body: dict) -> None:
    """The Wide & Deep order (left) beside the re-ranked one (right), with the re-rank's reasons."""
    ctx = body["features"].get("context") or {}
    rr = body["rerank"]
    print(f"   {body['user_id']}: {ctx.get('daypart')} on {ctx.get('device')}, top genres {ctx.get('top_genres')}; "
          f"model {body['model']}; re-rank {rr['status']} (applied={rr['applied']}); total {body['timings_ms']['total']:.0f} ms")
    print(f"     {'Wide & Deep':44} | {'re-ranked':44} reason")
    for before, after in zip(body.get("before_rerank") or body["items"], body["items"]):
        print(f"     {_title(before):44} | {_title(after):44} {after['reason']}")


def _title(item: dict) -> str:
    return f"{item['title'][:24]} ({'/'.join(item['genres'])[:17]})"


def run(args: argparse.Namespace, settings: Settings) -> int:
    import pandas as pd

    from features.offline import read_event_log
    from features.store import FeatureStoreClient
    from features.stream_job import StreamPaths, summarize_stats
    from infra import stack
    from models.cli import print_evaluation
    from models.evaluate import run_evaluation
    from models.train import EventLog, train
    from streamrec.catalog import load_items
    from streams.generator import generate_world
    from streams.producer import EventProducer
    from streams.replay import replay

    world = settings.data_path / "world"
    if (world / "world.json").exists():
        # A world of another time base on top of the last one would not work: its events reuse the last world's
        # ids (the seed's) at other times, so the stream job drops them as duplicates.
        print(f"a previous demo's data is in {settings.data_path}: stopping its stack and starting over")
        stack.down(settings)
        shutil.rmtree(settings.data_path)
    step = Steps(total=9)

    step("infra up: embedded broker, LLM server, model server")
    stack.up(settings, only=["broker", "redis", "llm", "model-server"])

    step(f"generate a synthetic world ({args.users} users, {args.items} items, {args.days} days, seed {args.seed})")
    # The world's timeline ends now, so the live features are live (not decayed to nothing) when the demo asks; an
    # hour earlier, as sessions started near the end run on past it and an event from the future is rejected.
    start_ms = int(time.time() * 1000 - args.days * 86_400_000 - WORLD_END_MARGIN_MS)
    summary = generate_world(world, users=args.users, items=args.items, days=args.days, seed=args.seed,
                             start_ms=start_ms)
    print("   " + json.dumps({k: v for k, v in summary.items() if k != "paths"}, default=str))

    step("Feast: register the feature repo, load the catalog and user profiles")
    store = FeatureStoreClient(settings)
    store.apply()
    # The demo speaks to users by the world's ids; the stores know them by their pseudonyms (privacy.pseudonymize).
    events = pd.DataFrame(read_event_log(world / "events.jsonl"), columns=["user_id", "item_id", "ts_ms"])
    stored = events.assign(user_id=events["user_id"].map(pseudonymizer(settings)))
    print(f"   items: {store.load_catalog(world / 'items.jsonl')}; "
          f"profiles: {store.build_profiles(stored, cut=pd.Timestamp(events['ts_ms'].max(), unit='ms', tz='UTC'))}")

    step("replay the event log into Kafka, read it back")
    print(f"   {replay(settings, world / 'events.jsonl').summary()}")
    print("   " + json.dumps(consume_summary(settings)))

    step("stream job (Spark Structured Streaming) -> live features in Feast")
    stack.up(settings, only=["stream"])
    # Each user's latest event; later ones (sessions running on past now) go to the DLQ as from the future.
    latest = events[events["ts_ms"] <= int(time.time() * 1000)].groupby("user_id")["ts_ms"].max().to_dict()
    waited = wait_until_online(settings, latest)
    print(f"   all users' online features current after {waited:.0f}s more")
    print("   " + json.dumps(summarize_stats(StreamPaths.of(settings).stats)))
    sample = sorted(latest)[:SHOW_USERS]
    for row in store.online_features([pseudonymizer(settings)(u) for u in sample]):
        print("   " + describe_live(row))

    step("train: candidate retrieval + Wide & Deep, exported to the model repo (served by the model server)")
    log = EventLog(world / "events.jsonl", world / "items.jsonl", "world")
    trained = train(settings, log, progress=False)
    print(f"   model version {trained['version']} at {trained['path']}; train metrics {trained['metrics']['train']}")

    step("evaluate: baselines vs Wide & Deep with and without live features (report with plots)")
    out = settings.data_path / "reports" / "world"
    print_evaluation(run_evaluation(settings, log, out, progress=False), out, indent="   ")

    step("recommend API (and its web page) and the ingest endpoint up; recommendations now")
    stack.up(settings, only=["ingest", "api"])
    headers = show_tokens(settings, sample[0])
    items = list(load_items(world / "items.jsonl").values())
    for user in sample:
        show_recommendations(recommend(settings, headers, user, wait_rerank_s=args.rerank_wait))

    step("a burst of context-changing events (late night, phone, short comedies) -> recommendations again")
    burst = burst_events(sample, items, int(time.time() * 1000))
    published_at = time.monotonic()
    with EventProducer(settings, source="demo") as producer:
        for event in burst:
            producer.send(event)
    print(f"   published {len(burst)} events for {', '.join(sample)}")
    waited = wait_until_online(settings, {u: max(e["ts"] for e in burst if e["user_id"] == u) for u in sample},
                               timeout_s=300, poll_s=0.05, since=published_at)
    print(f"   event -> online features: all three users' rows changed {waited:.2f}s after publishing began")
    for user in sample:
        show_recommendations(recommend(settings, headers, user, wait_rerank_s=args.rerank_wait))

    step.done()
    print("\ndemo done; the stack keeps running (API docs on "
          f"http://127.0.0.1:{settings.serving.port}/docs): streamrec infra status | streamrec infra down")
    print(f"web page (watch {sample[0]}'s list change as you click and watch): {ui_url(settings, sample[0])}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on embedded defaults")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rerank-wait", type=float, default=180.0,
                   help="seconds to wait per user for the LLM re-rank to be served (it runs in the background)")
    p.set_defaults(func=run)
