"""``streamrec bench <name> [ARGS]``: benchmarks that print figures (speed goals live here, not in tests).

The benchmarks live in the source checkout's ``benchmarks/`` folder, outside the installed packages: a
benchmark is imported only when it runs, so ``streamrec --help`` never loads one. Each exposes
``add_arguments(parser)`` and ``run(args, settings) -> int``; its arguments are parsed by its own parser
(``streamrec bench serve --help`` shows them).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

from streamrec.config import Settings
from streamrec.errors import UserError

BENCHMARKS = {
    "ingest": "events/s: raw kafka-python vs the validating SDK",
    "freshness": "event -> online-visible latency of the stream job at a fixed rate",
    "retrieval": "top-K latency and IVF recall as the catalog grows",
    "serve": "/recommend latency per stage at a fixed request rate",
    "llm": "intent decision latency and accuracy per LLM and decoder (+ listwise)",
    "rerank": "context change -> re-ranked list in the cache, through the refresh worker",
    "broker": "what the embedded broker loses on a clean restart and on kill -9",
}
CHECKOUT = Path(__file__).resolve().parents[1]


def benchmark(name: str) -> ModuleType:
    """The module ``benchmarks.<name>`` of the checkout this package was installed from (editable install)."""
    if not (CHECKOUT / "benchmarks" / f"{name}.py").is_file():
        raise UserError(f"benchmarks run from a source checkout: no benchmarks/{name}.py under {CHECKOUT} "
                        "(install the project with `pip install -e .` from its repository)")
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    return importlib.import_module(f"benchmarks.{name}")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    module = benchmark(args.bench)
    parser = argparse.ArgumentParser(prog=f"streamrec bench {args.bench}", description=BENCHMARKS[args.bench])
    module.add_arguments(parser)
    return module.run(parser.parse_args(args.passthrough), settings)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures (`streamrec bench NAME --help`)")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name, help_text in BENCHMARKS.items():
        # The benchmark's own parser reads the rest of the line (main() hands it over as `passthrough`).
        bp = bsub.add_parser(name, help=help_text, add_help=False)
        bp.set_defaults(func=_run, passthrough=[])
