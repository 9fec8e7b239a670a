"""``streamrec ab report`` and ``streamrec ab simulate``."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from streamrec.config import Settings


def _print(line: str) -> None:
    print(f"   {line}", flush=True)


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from serving.experiments.report import build, render

    report = build(settings, args.experiment, progress=_print)
    text = render(report)
    print(text, end="")
    if args.json:
        Path(args.json).write_text(json.dumps(dataclasses.asdict(report), indent=1), encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from serving.experiments.simulate import simulate
    from streamrec.auth import bearer_header
    from streamrec.errors import UserError
    from streams.producer import EventProducer
    from streams.world import load_world

    world = load_world(Path(args.world) if args.world else settings.data_path / "world")
    users = list(world.user_ids[:args.users] if args.users else world.user_ids)
    url = (args.url or f"http://{settings.serving.host}:{settings.serving.port}").rstrip("/")
    headers = bearer_header(settings, ["recommend:any"], name="ab-simulate")

    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as http, EventProducer(
            settings, source="ab-simulate") as producer:
        def recommend(user_id: str, device: str, hour: int) -> list[str]:
            try:
                r = http.get("/recommend", params={"user_id": user_id, "k": args.k, "device": device, "hour": hour})
            except httpx.HTTPError as e:
                raise UserError(f"the recommend API at {url} did not answer: {e}") from None
            if r.status_code != 200:
                raise UserError(f"the recommend API at {url} answered {r.status_code}: {r.text[:300]}")
            return [item["item_id"] for item in r.json()["items"]]

        tally = simulate(world, recommend, producer.send, users=users, rounds=args.rounds, hour=args.hour,
                         seed=args.seed, progress=_print)
    print(f"{tally.lists} lists answered: {tally.clicks} clicks, {tally.watches} watches published to "
          f"{settings.kafka.events_topic}; now `streamrec ab report`")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ab", help="A/B tests: the report of an experiment, a simulated one on a synthetic world")
    ab = p.add_subparsers(dest="ab_command", required=True, metavar="{report,simulate}")

    q = ab.add_parser("report", help="per-variant CTR, watch time and NDCG at exposure with CIs, the tests against "
                                     "the control, sample-ratio mismatch, off-policy estimates of exploring variants")
    q.add_argument("--experiment", help="its name (default: experiments.name)")
    q.add_argument("--json", help="also write the figures to this JSON file")
    q.set_defaults(func=_report)

    q = ab.add_parser("simulate", help="the users of a synthetic world ask the running API for lists and answer them "
                                       "from the world's ground truth (events to kafka.events_topic)")
    q.add_argument("--world", help="the world's directory (default: <data dir>/world, the demo's)")
    q.add_argument("--url", help="the recommend API (default: http://serving.host:serving.port)")
    q.add_argument("--users", type=int, default=0, help="the world's first N users (default: all)")
    q.add_argument("--rounds", type=int, default=5, help="lists per user (default 5)")
    q.add_argument("--hour", type=int, default=20, choices=range(24), metavar="0..23",
                   help="the hour the users ask at (default 20)")
    q.add_argument("--k", type=int, default=10, help="items per list (default 10)")
    q.add_argument("--seed", type=int, default=0, help="the users' answers' seed (default 0)")
    q.set_defaults(func=_simulate)
