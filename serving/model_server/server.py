"""Run the model server: the real ``tensorflow_model_server`` when it is on PATH, else our own.

Both serve the same repo layout (``<repo>/<name>/<version>/saved_model.pb``) on the same
gRPC and REST ports, so clients cannot tell which one answers.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

REAL_BINARY = "tensorflow_model_server"


def real_server_argv(
    binary: str, model_dir: Path, name: str, grpc_port: int, rest_port: int, poll_seconds: float
) -> list[str]:
    return [
        binary,
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_name={name}",
        f"--model_base_path={model_dir.resolve()}",
        # The flag is whole seconds, and 0 would mean "poll once"; round up to at least 1.
        f"--file_system_poll_wait_seconds={max(1, math.ceil(poll_seconds))}",
    ]


def serve(repo: Path, name: str, host: str, grpc_port: int, rest_port: int, poll_seconds: float) -> None:
    """Serve until SIGINT/SIGTERM; with the real binary this process becomes it (same pid)."""
    binary = shutil.which(REAL_BINARY)
    if binary:
        argv = real_server_argv(binary, Path(repo) / name, name, grpc_port, rest_port, poll_seconds)
        log.info("running %s", " ".join(argv))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(binary, argv)
    log.info("%s is not on PATH; serving with the built-in TF Serving-API server", REAL_BINARY)
    serve_builtin(repo, name, host, grpc_port, rest_port, poll_seconds)


def serve_builtin(repo: Path, name: str, host: str, grpc_port: int, rest_port: int, poll_seconds: float) -> None:
    import uvicorn

    from serving.model_server.grpc_service import start_grpc_server
    from serving.model_server.repo import ModelRepo
    from serving.model_server.rest_app import make_app

    models = ModelRepo(repo, name)
    models.poll()
    if models.current() is None:
        log.warning("no loadable version under %s yet; answering NOT_FOUND until one appears", models.model_dir)
    grpc_server = start_grpc_server(models, host, grpc_port)
    stop = threading.Event()
    threading.Thread(target=models.watch, args=(poll_seconds, stop), name="model-repo-poll", daemon=True).start()
    log.info("model %s: gRPC on %s:%d, REST on %s:%d, polling %s every %.1fs",
             name, host, grpc_port, host, rest_port, models.model_dir, poll_seconds)
    try:
        # Runs until SIGINT/SIGTERM, which uvicorn catches to shut down cleanly.
        uvicorn.Server(uvicorn.Config(make_app(models), host=host, port=rest_port, log_level="warning")).run()
    finally:
        stop.set()
        grpc_server.stop(grace=5).wait()
