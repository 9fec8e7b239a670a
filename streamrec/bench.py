"""``streamrec bench <name>``: benchmarks that print figures (speed goals live here, not in tests).

Each benchmark module exposes ``add_arguments(parser)`` and ``run(args, settings) -> int``.
"""
from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "ingest": ("streams.bench_ingest", "events/s: raw kafka-python vs the validating SDK"),
    "freshness": ("features.bench_freshness", "event -> online-visible latency of the stream job at a fixed rate"),
    "retrieval": ("models.bench_retrieval", "top-K latency and IVF recall as the catalog grows"),
    "serve": ("serving.bench_serve", "/recommend latency per stage at a fixed request rate"),
    "llm": ("serving.rerank.bench_llm", "intent decision latency and accuracy per LLM and decoder (+ listwise)"),
    "rerank": ("serving.bench_rerank", "context change -> re-ranked list in the cache, through the refresh worker"),
    "broker": ("infra.bench_broker", "what the embedded broker loses on a clean restart and on kill -9"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name, (module, help_text) in BENCHMARKS.items():
        bp = bsub.add_parser(name, help=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(bp)
        bp.set_defaults(func=mod.run)
