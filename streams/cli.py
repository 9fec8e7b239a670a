"""``streamrec produce|replay|ingest-http|generate|movielens|catalog``: getting events and items into the pipeline."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamrec.config import Settings


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from streams.replay import replay

    stats = replay(settings, args.file, progress=not args.quiet, source="produce")
    print(stats.summary())
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.replay import replay

    stats = replay(settings, args.log, speed=args.speed, progress=not args.quiet)
    print(stats.summary())
    return 0


def _ingest_http(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from streamrec.http_limits import uvicorn_options
    from streams.ingest_http import create_ingest_app

    uvicorn.run(create_ingest_app(settings), host=args.host, port=args.port or settings.ingest.http_port,
                **uvicorn_options())
    return 0


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.generator import generate_world

    out = args.out or settings.data_path / "world"
    summary = generate_world(out, users=args.users, items=args.items, days=args.days, seed=args.seed)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _movielens(args: argparse.Namespace, settings: Settings) -> int:
    from streams.movielens import convert

    print(json.dumps(convert(args.path, args.out, args.format), indent=2, default=str))
    return 0


def _catalog(args: argparse.Namespace, settings: Settings) -> int:
    from streams.catalog_topic import publish_changes

    published = publish_changes(settings, args.file, args.op)
    return 1 if published.dead else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("produce", help="validate and publish JSONL events from a file or stdin (bad ones go to the DLQ)")
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="JSONL file, one event per line (default: stdin)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_produce)

    p = sub.add_parser("replay", help="publish a recorded JSONL event log, optionally paced by its timestamps")
    p.add_argument("log", metavar="LOG", help="JSONL event log")
    p.add_argument("--speed", type=float, metavar="X",
                   help="keep the events' spacing, X times faster (default: as fast as possible)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_replay)

    p = sub.add_parser("ingest-http", help="serve POST /events (JSON array of events) and GET /healthz")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default: ingest.http_port")
    p.set_defaults(func=_ingest_http)

    p = sub.add_parser("generate", help="write a synthetic world: users, items and an event log")
    p.add_argument("--out", type=Path, help="output directory (default: <data_dir>/world)")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--days", type=float, default=7)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=_generate)

    p = sub.add_parser("movielens", help="convert a MovieLens download (a path you give) into an event log")
    p.add_argument("path", type=Path, help="MovieLens directory or ratings file")
    p.add_argument("out", type=Path, help="event log to write (JSONL)")
    p.add_argument("--format", default="auto", help="MovieLens layout (default: detect)")
    p.set_defaults(func=_movielens)

    p = sub.add_parser("catalog", help="add or change items live: publish JSONL item records to the catalog topic")
    ops = p.add_subparsers(dest="op", required=True, metavar="add|update")
    for op, what in (("add", "whole item records (item_id, title, genres, duration_minutes; year, description, "
                              "popularity optional): new items, or replacing ones"),
                     ("update", "item_id and the fields to change, of items the catalog holds")):
        q = ops.add_parser(op, help=f"publish {what}; refused lines go to kafka.catalog_dlq_topic (exit 1)")
        q.add_argument("file", metavar="FILE", help="JSONL, one item per line")
        q.set_defaults(func=_catalog)
