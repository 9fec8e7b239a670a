"""``streamrec serve``: the recommend API under uvicorn, with the re-rank refresh worker inside it.

The worker runs in the API process because the re-rank cache is that process's memory
(``serving.worker``); there is no separate worker command. It is on by default when
Kafka is the embedded broker (one node) and off otherwise, where ``--with-worker`` opts in.
"""
from __future__ import annotations

import argparse

from streamrec.config import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from serving.app import create_app
    from streamrec.http_limits import uvicorn_options
    from streams.kafka_util import single_local_broker

    with_worker = single_local_broker(settings.kafka) if args.with_worker is None else args.with_worker
    group = {"worker_group": args.worker_group} if args.worker_group else {}
    app = create_app(settings, with_worker=with_worker, **group)
    print(f"recommend API on http://{args.host or settings.serving.host}:{args.port or settings.serving.port} "
          f"(docs at /docs; re-rank worker {'on' if with_worker else 'off'})", flush=True)
    # One process: the re-rank cache and its worker live in it (see the module doc).
    uvicorn.run(app, host=args.host or settings.serving.host, port=args.port or settings.serving.port,
                log_level="info", access_log=args.access_log, **uvicorn_options())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the recommend API (GET /recommend, /healthz, /metrics, /docs)")
    p.add_argument("--host", help="bind address (default: serving.host)")
    p.add_argument("--port", type=int, help="port (default: serving.port)")
    p.add_argument("--with-worker", action=argparse.BooleanOptionalAction, default=None,
                   help="run the re-rank refresh worker in the API process (default: on with the embedded broker)")
    p.add_argument("--worker-group", help="the worker's consumer group (default: serving.worker.DEFAULT_GROUP)")
    p.add_argument("--access-log", action="store_true", help="log every request (off: it costs latency)")
    p.set_defaults(func=_serve)
