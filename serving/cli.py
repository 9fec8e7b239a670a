"""``streamrec serve``: the recommend API under uvicorn; ``streamrec rerank-worker``: the re-rank refresh worker
as a process of its own.

Where the worker runs follows the re-rank cache (``serving.rerank_cache``; ``serving.worker`` says why):
- Redis (the default with Feast on Redis): ``rerank-worker`` fills the cache every API replica reads, and
  ``serve`` runs no worker unless ``--with-worker`` asks (one more consumer of the worker group);
- memory: only a worker inside the API process can fill that process's cache, so ``rerank-worker`` refuses
  to start, and ``serve`` runs one by default when Kafka is the embedded broker (one node; with a cluster,
  ``--with-worker`` opts in).
"""
from __future__ import annotations

import argparse

from streamrec.config import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from serving.app import create_app
    from serving.rerank.cache import backend
    from streamrec.http_limits import uvicorn_options
    from streams.kafka_util import single_local_broker

    with_worker = args.with_worker
    if with_worker is None:  # see the module doc
        with_worker = backend(settings) == "memory" and single_local_broker(settings.kafka)
    group = {"worker_group": args.worker_group} if args.worker_group else {}
    app = create_app(settings, with_worker=with_worker, **group)
    print(f"recommend API on http://{args.host or settings.serving.host}:{args.port or settings.serving.port} "
          f"(docs at /docs; re-rank cache {backend(settings)}, worker {'on' if with_worker else 'off'})", flush=True)
    uvicorn.run(app, host=args.host or settings.serving.host, port=args.port or settings.serving.port,
                log_level="info", access_log=args.access_log, **uvicorn_options())
    return 0


def _rerank_worker(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from serving.app import build_services
    from serving.rerank.cache import backend
    from serving.worker import DEFAULT_GROUP, create_worker_app
    from streamrec.errors import UserError
    from streamrec.http_limits import uvicorn_options

    if backend(settings) == "memory":
        raise UserError(f"the re-rank cache is in-process memory (serving.rerank_cache: "
                        f"{settings.serving.rerank_cache}, feast.online_store: {settings.feast.online_store}): a "
                        "separate worker could not fill it. Set serving.rerank_cache: redis to share it, or run the "
                        "worker inside the API (`streamrec serve --with-worker`)")
    services = build_services(settings, with_worker=True, worker_group=args.worker_group or DEFAULT_GROUP)
    app = create_worker_app(settings, services)
    host, port = args.host or settings.serving.host, args.port or settings.serving.worker_port
    print(f"re-rank worker: {settings.kafka.features_topic} -> the re-rank cache in Redis "
          f"({settings.feast.redis_connection}); /healthz and /metrics on http://{host}:{port}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, **uvicorn_options())
    return 0


def _delete_user(args: argparse.Namespace, settings: Settings) -> int:
    from serving.privacy import delete_user

    f = delete_user(settings, args.user_id)
    cached = ("the re-rank cache is in-process memory: its entries expire within 15 min" if
              f.cached_reranks is None else f"{f.cached_reranks} cached re-rank(s)")
    print(f"deleted {args.user_id!r} (stored as {f.user_id}): {f.online_rows} online row(s), {f.offline_rows} offline "
          f"row(s), {cached}; recorded in {settings.kafka.deletions_topic} at {f.deleted_at_ms} (the stream job "
          f"drops its state of the user and folds none of their events up to then, a replay included)")
    return 0


def _pseudonym(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.pseudonyms import pseudonymizer

    print(pseudonymizer(settings)(args.user_id))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the recommend API (GET /recommend, /healthz, /metrics, /docs)")
    p.add_argument("--host", help="bind address (default: serving.host)")
    p.add_argument("--port", type=int, help="port (default: serving.port)")
    p.add_argument("--with-worker", action=argparse.BooleanOptionalAction, default=None,
                   help="run the re-rank refresh worker in the API process (default: on only with the in-process "
                        "re-rank cache and the embedded broker; with the Redis cache `streamrec rerank-worker` runs it)")
    p.add_argument("--worker-group", help="the worker's consumer group (default: serving.worker.DEFAULT_GROUP)")
    p.add_argument("--access-log", action="store_true", help="log every request (off: it costs latency)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("rerank-worker", help="run the re-rank refresh worker on its own (needs the Redis re-rank "
                                             "cache); GET /healthz, /metrics")
    p.add_argument("--host", help="bind address of /healthz and /metrics (default: serving.host)")
    p.add_argument("--port", type=int, help="their port (default: serving.worker_port)")
    p.add_argument("--worker-group", help="the consumer group (default: serving.worker.DEFAULT_GROUP); processes "
                                          "in one group share the rows")
    p.set_defaults(func=_rerank_worker)

    p = sub.add_parser("privacy", help="delete a user from every store; show a user's pseudonym")
    privacy = p.add_subparsers(dest="privacy_command", required=True, metavar="{delete-user,pseudonym}")
    q = privacy.add_parser("delete-user", help="remove the user's online and offline feature rows and cached "
                                               "re-ranks, tombstone them on the features topic, and record the "
                                               "deletion so that no replay brings the user back")
    q.add_argument("user_id", help="the user's id as producers send it (pseudonymized here when "
                                   "privacy.pseudonymize is on)")
    q.set_defaults(func=_delete_user)
    q = privacy.add_parser("pseudonym", help="the id the stores hold for a user (itself when privacy.pseudonymize "
                                             "is off)")
    q.add_argument("user_id")
    q.set_defaults(func=_pseudonym)
