"""``streamrec serve-model``: serve the model repo over TF Serving's gRPC and REST APIs."""
from __future__ import annotations

import argparse
from pathlib import Path

from streamrec.config import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo", type=Path, help="model repo holding <name>/<version>/saved_model.pb (default: <data_dir>/model_repo)"
    )
    p.add_argument("--name", help="model name (default: model.name)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default: model.grpc_port)")
    p.add_argument("--rest-port", type=int, help="REST port (default: model.rest_port)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from serving.model_server.server import serve

    m = settings.model
    serve(
        repo=(args.repo or settings.data_path / "model_repo").expanduser().resolve(),
        name=args.name or m.name,
        host=m.host,
        grpc_port=m.grpc_port if args.grpc_port is None else args.grpc_port,
        rest_port=m.rest_port if args.rest_port is None else args.rest_port,
        poll_seconds=m.poll_seconds,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve-model",
        help="serve the model repo over TF Serving's gRPC + REST APIs (the real tensorflow_model_server if on PATH)",
    )
    add_arguments(p)
    p.set_defaults(func=run)
