"""``streamrec stream``: run the streaming feature job, or show its stats."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamrec.config import Settings


def _stream(args: argparse.Namespace, settings: Settings) -> int:
    from features import stream_job

    if args.reset_offsets:
        from features.stream_reset import reset_offsets

        reset_offsets(settings, args.reset_offsets)
        return 0
    if args.stats:
        summary = stream_job.summarize_stats(stream_job.StreamPaths.of(settings).stats, last=args.last)
    else:
        summary = stream_job.run(settings, catalog=Path(args.catalog) if args.catalog else None, available_now=args.available_now)
    print(json.dumps(summary, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="compute live per-user features from Kafka into Feast (Spark Structured Streaming)")
    p.add_argument("--available-now", action="store_true", help="process what is in Kafka now, then stop")
    p.add_argument("--catalog", help="items.jsonl for item genres/durations (default: <data_dir>/world/items.jsonl)")
    p.add_argument("--stats", action="store_true", help="print freshness percentiles, counts and consumer lag, then exit")
    p.add_argument("--last", type=int, help="with --stats: only the last N batches")
    p.add_argument("--reset-offsets", choices=("earliest", "latest"),
                   help="after the job stopped because the topic no longer matches its checkpoint: resume from the "
                        "topic's earliest or latest offsets, keeping the per-user state (the job must be stopped)")
    p.set_defaults(func=_stream)
