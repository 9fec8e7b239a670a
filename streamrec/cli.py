"""The ``streamrec`` command: one entry point that reaches every part.

Each package contributes its subcommands through ``register(subparsers)`` in
its own ``cli`` module; heavy imports (Spark, TensorFlow) happen inside the
command functions so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import warnings

# Before numpy loads: multi-threaded BLAS costs ~8 ms per small matmul on 2 busy cores
# (retrieval's top-K); the services here get their parallelism from processes and Spark.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from streamrec.config import load_settings
from streamrec.errors import UserError

COMMAND_MODULES = (
    "infra.cli",
    "streams.cli",
    "features.stream_cli",
    "features.cli",
    "models.cli",
    "serving.model_server.cli",
    "serving.cli",
    "serving.experiments.cli",
    "streamrec.auth_cli",
    "streamrec.bench",
    "streamrec.demo",
)


def _without_deprecations(show):
    """``show`` (a ``warnings.showwarning``) for everything but deprecation notices: third-party ones (kafka-python,
    feast, ibis via DuckDB) say nothing to a user. Dropped where warnings are shown, not by a filter: feast resets
    the filters when imported (DeprecationWarning: "once")."""
    if getattr(show, "drops_deprecations", False):  # main() ran before in this process
        return show

    def showwarning(message, category, *args, **kwargs):
        if not issubclass(category, (DeprecationWarning, PendingDeprecationWarning)):
            show(message, category, *args, **kwargs)
    showwarning.drops_deprecations = True
    return showwarning


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrec", description="Streaming, real-time personalization pipeline.")
    parser.add_argument("--config", help="YAML settings file (default: $STREAMREC_CONFIG, else embedded defaults)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _terminate(signum, frame):
    # `infra down` sends SIGTERM: unwind like Ctrl-C so jobs stop cleanly (queries, producers).
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _without_deprecations(warnings.showwarning)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Only a command that parses the rest of the line itself (a benchmark) takes what is left over.
    if rest and not hasattr(args, "passthrough"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.passthrough = rest
    if not args.verbose:
        # TensorFlow's C++ start-up notices (CPU instructions, no GPU driver) say nothing to a user; read at its import.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python logs every reconnect at WARNING/ERROR; keep the console for our own messages.
    logging.getLogger("kafka").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    for chatty in ("feast", "py4j", "httpx", "httpx2", "faiss"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # TensorFlow warns about its own tracing (retracing notices while a model is evaluated in pieces).
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        settings = load_settings(args.config)
        return int(args.func(args, settings) or 0)
    except UserError as e:
        print(f"streamrec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"streamrec {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error of ours. Quiet the flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
