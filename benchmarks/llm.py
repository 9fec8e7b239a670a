"""``streamrec bench llm``: decision latency and accuracy of each candidate LLM, side by side.

For every model (each embedded one installed, started in turn on a free port; or the configured
endpoint) and every intent decoder (``scored``: read from next-token probabilities; ``generated``:
the model writes the JSON), each labelled request (``intent_accuracy``) is decided once through
``Reranker.refresh`` (a fresh decision, as the refresh worker makes), under one of a few live
contexts in turn: the latency is the whole decision, the accuracy is per field against the labels.
``--listwise N`` also times N listwise re-ranks of the fixed 20-item catalog below.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from infra import llm
from serving.rerank.context import Candidate, LiveContext, RecentItem
from serving.rerank.endpoint import MODELS, is_embedded
from serving.rerank.intent_accuracy import FIELDS, accuracy, load_labelled
from streamrec.config import Settings
from streamrec.errors import UserError

DECODERS = ("scored", "generated")
# A small fixed catalog for listwise calls: two of each kind.
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
CONTEXTS = [
    LiveContext("late_night", 23, False, "phone", (("Comedy", 0.7), ("Animation", 0.3)),
                (RecentItem("Laugh Track Nights", ("Comedy",)),), "s1", 4, 900.0, 60.0),
    LiveContext("evening", 20, True, "tv", (("Action", 0.6), ("Sci-Fi", 0.4)), (), "s2", 2, 300.0, 30.0),
    LiveContext("morning", 8, False, "desktop", (("Documentary", 0.8),), (), None, 0, 0.0, 7200.0),
    LiveContext("afternoon", 15, True, "tablet", (("Animation", 0.5), ("Children's", 0.5)), (), "s4", 3, 600.0, 45.0),
]


def candidates() -> list[Candidate]:
    n = len(CATALOG)
    return [Candidate(i, t, g, 2000, float(m), round(1.0 - k / n, 4), round(1.0 - k / n, 4))
            for k, (i, t, g, m) in enumerate(CATALOG)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="installed",
                        help="embedded models to compare, comma-separated names of serving.rerank.endpoint.MODELS, 'installed' "
                             "(default) or 'all'; ignored when an endpoint is configured (that one is measured)")
    parser.add_argument("--decoders", default=",".join(DECODERS), help="comma-separated: scored, generated")
    parser.add_argument("--requests", type=int, help="labelled requests to decide (default: all)")
    parser.add_argument("--listwise", type=int, default=0, help="listwise re-ranks to time per model (default 0)")
    parser.add_argument("--timeout", type=float, help="per-call timeout in seconds (default: llm.timeout_seconds)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    decoders = _names(args.decoders, DECODERS, "decoder")
    if args.requests is not None and args.requests < 1:
        raise UserError("--requests must be at least 1")
    labelled = load_labelled()[: args.requests]
    settings = dataclasses.replace(settings, llm=dataclasses.replace(
        settings.llm, timeout_seconds=args.timeout or settings.llm.timeout_seconds))
    rows = []
    if is_embedded(settings):
        for name in _models(args.models):
            rows += _bench_embedded(settings, name, decoders, labelled, args.listwise)
    else:
        rows += _bench(settings, settings.llm.model, decoders, labelled, args.listwise)
    print(json.dumps(rows, indent=2))
    print(_table(rows))
    return 0


def _names(text: str, allowed, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UserError(f"unknown {what}(s) {unknown or text!r}; choose from {', '.join(allowed)}")
    return names


def _models(text: str) -> list[str]:
    if text == "all":
        return list(MODELS)
    if text == "installed":
        names = [n for n in MODELS if not llm.missing(n)]
        if not names:
            raise UserError(f"no embedded LLM is installed: {llm.INSTALL_HINT}")
        return names
    return _names(text, MODELS, "model")


def _bench_embedded(settings: Settings, name: str, decoders, labelled, listwise: int) -> list[dict]:
    print(f"bench llm: starting {name}", flush=True)
    with llm.embedded_server(settings, f"bench-llm-{name}", name) as cfg:
        return _bench(cfg, name, decoders, labelled, listwise)


def _bench(settings: Settings, label: str, decoders, labelled, listwise: int) -> list[dict]:
    from serving.rerank.reranker import Reranker

    rows = []
    for decoder in decoders:
        # Its own cache: a shared (Redis) one could answer from decisions an earlier run made.
        cfg = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, mode="intent", intent_decoder=decoder),
                                  serving=dataclasses.replace(settings.serving, rerank_cache="memory"))
        latencies, statuses, pairs = [], [], []
        with Reranker(cfg) as reranker:
            print(f"bench llm: {label}, {decoder}: {len(labelled)} labelled requests", flush=True)
            for n, item in enumerate(labelled):
                t0 = time.monotonic()
                result = reranker.refresh(f"bench-{n}", candidates(), CONTEXTS[n % len(CONTEXTS)], item.request)
                latencies.append((time.monotonic() - t0) * 1000.0)
                statuses.append(result.status)
                pairs.append((item, result.intent))
                if (n + 1) % 10 == 0:
                    print(f"  {n + 1}/{len(labelled)} decided, median {np.median(latencies):.0f} ms", flush=True)
        rows.append({"model": label, "decoder": decoder, **_latency(latencies),
                     "accuracy": {k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in accuracy(pairs).items()},
                     "statuses": {s: statuses.count(s) for s in sorted(set(statuses))}})
    if listwise:
        rows.append(_bench_listwise(settings, label, listwise))
    return rows


def _bench_listwise(settings: Settings, label: str, calls: int) -> dict:
    from serving.rerank.reranker import Reranker

    cfg = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, mode="listwise"))
    latencies, statuses = [], []
    with Reranker(cfg) as reranker:
        for n in range(calls):
            t0 = time.monotonic()
            result = reranker.refresh(f"bench-listwise-{n}", candidates(), CONTEXTS[n % len(CONTEXTS)])
            latencies.append((time.monotonic() - t0) * 1000.0)
            statuses.append(result.status)
            print(f"  listwise #{n + 1}: {result.status} in {latencies[-1] / 1000:.1f}s", flush=True)
    return {"model": label, "decoder": "listwise", **_latency(latencies),
            "statuses": {s: statuses.count(s) for s in sorted(set(statuses))}}


def _latency(ms: list[float]) -> dict:
    return {"calls": len(ms), "latency_ms_median": round(float(np.median(ms)), 1),
            "latency_ms_p95": round(float(np.percentile(ms, 95)), 1), "latency_ms_max": round(max(ms), 1)}


def _table(rows: list[dict]) -> str:
    head = ["model", "decoder", "decisions", "median", "p95"] + [f"acc {f}" for f in (*FIELDS, "all_fields")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        acc = r.get("accuracy", {})
        cells = [r["model"], r["decoder"], str(r["calls"]), f"{r['latency_ms_median'] / 1000:.2f} s",
                 f"{r['latency_ms_p95'] / 1000:.2f} s"] + [f"{acc[f]:.2f}" if f in acc else "" for f in (*FIELDS, "all_fields")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
