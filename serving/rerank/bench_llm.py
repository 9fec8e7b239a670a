"""``streamrec bench llm``: the re-ranker's LLM calls, both modes, on the configured endpoint.

Each request is a cache miss (a fresh user id) sent through ``Reranker.refresh``, so it
measures exactly what the background re-rank costs: latency (median, p95), tokens/s
generated, and the fraction of answers that validated. With no endpoint configured the
embedded server is started (and left running) through ``infra``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from serving.rerank.context import Candidate, LiveContext, RecentItem
from streamrec.config import Settings

# A small fixed catalog: two of each kind, so a clear request has a clear direction.
CATALOG = [
    ("c01", "Laugh Track Nights", ("Comedy",), 88), ("c02", "The Office Party", ("Comedy", "Romance"), 95),
    ("c03", "Steel Horizon", ("Action", "Sci-Fi"), 142), ("c04", "Orbit Protocol", ("Sci-Fi", "Thriller"), 131),
    ("c05", "Deep Ocean Diaries", ("Documentary",), 52), ("c06", "The Bee Keepers", ("Documentary",), 61),
    ("c07", "Midnight Manor", ("Horror",), 101), ("c08", "The Hollow Door", ("Horror", "Mystery"), 97),
    ("c09", "Paper Boats", ("Animation", "Children's"), 78), ("c10", "Sky Pirates", ("Animation", "Adventure"), 84),
    ("c11", "Quiet Harbor", ("Drama",), 124), ("c12", "The Long Winter", ("Drama", "War"), 158),
    ("c13", "Dust and Spurs", ("Western",), 109), ("c14", "Rose Street", ("Romance", "Drama"), 113),
    ("c15", "Case Closed", ("Crime", "Thriller"), 118), ("c16", "The Heist Club", ("Crime", "Comedy"), 104),
    ("c17", "Song of the Valley", ("Musical",), 99), ("c18", "Noir Avenue", ("Film-Noir", "Crime"), 92),
    ("c19", "Kingdom of Ash", ("Fantasy", "Adventure"), 137), ("c20", "Tiny Robots", ("Animation", "Comedy"), 81),
]
SCENARIOS = [
    (LiveContext("late_night", 23, False, "phone", (("Comedy", 0.7), ("Animation", 0.3)),
                 (RecentItem("Laugh Track Nights", ("Comedy",)),), "s1", 4, 900.0, 60.0), "something funny and short"),
    (LiveContext("evening", 20, True, "tv", (("Action", 0.6), ("Sci-Fi", 0.4)), (), "s2", 2, 300.0, 30.0), None),
    (LiveContext("morning", 8, False, "desktop", (("Documentary", 0.8),), (), None, 0, 0.0, 7200.0), "learn something"),
    (LiveContext("afternoon", 15, True, "tablet", (("Animation", 0.5), ("Children's", 0.5)), (), "s4", 3, 600.0, 45.0),
     "a film for the kids"),
]


def candidates() -> list[Candidate]:
    n = len(CATALOG)
    return [Candidate(i, t, g, 2000, float(m), round(1.0 - k / n, 4), round(1.0 - k / n, 4)) for k, (i, t, g, m) in enumerate(CATALOG)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=8, help="calls per mode (default 8)")
    parser.add_argument("--modes", default="intent,listwise", help="comma-separated: intent, listwise")
    parser.add_argument("--timeout", type=float, help="per-call timeout in seconds (default: llm.timeout_seconds)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from infra import llm, process
    from serving.rerank.reranker import Reranker

    if llm.is_embedded(settings):
        if llm.missing():
            from streamrec.errors import UserError

            raise UserError(f"embedded LLM not installed ({'; '.join(llm.missing())}): {llm.INSTALL_HINT}")
        process.start(llm.llm_service(settings))
    base_url, _, model = llm.resolve_endpoint(settings)
    print(f"bench llm: {model} at {base_url}; {args.requests} calls per mode, {len(CATALOG)} candidates", flush=True)
    rows = {}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        timeout = args.timeout or settings.llm.timeout_seconds
        cfg = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, mode=mode, timeout_seconds=timeout))
        latencies, statuses, tokens_per_s = [], [], []
        with Reranker(cfg) as reranker:
            for n in range(args.requests):
                context, q = SCENARIOS[n % len(SCENARIOS)]
                before = reranker.stats.snapshot()["tokens"].get("completion", 0)
                t0 = time.monotonic()
                result = reranker.refresh(f"bench-{mode}-{n}", candidates(), context, q)
                seconds = time.monotonic() - t0
                generated = reranker.stats.snapshot()["tokens"].get("completion", 0) - before
                latencies.append(seconds * 1000.0)
                statuses.append(result.status)
                if generated:
                    tokens_per_s.append(generated / seconds)
                print(f"  {mode} #{n + 1}: {result.status} in {seconds:.1f}s, {generated} tokens", flush=True)
        rows[mode] = {
            "latency_ms_median": round(float(np.median(latencies)), 1),
            "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
            "tokens_per_s": round(float(np.median(tokens_per_s)), 1) if tokens_per_s else None,
            "valid_fraction": round(statuses.count("applied") / len(statuses), 3),
            "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        }
    print(json.dumps({"model": model, "endpoint": base_url, "modes": rows}, indent=2))
    return 0
