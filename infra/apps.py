"""The project's own long-running jobs as stack components: the model server, the stream job, the ingest
endpoint, the recommend API (with its web page) and the re-rank refresh worker.

Unlike the broker, Redis or the model server, the stream job, the API and the worker need inputs first (a
catalog, a model), so ``missing(settings)`` says what is absent and ``infra up`` skips them until then.
"""
from __future__ import annotations

import sys
from pathlib import Path

import httpx

from infra import process
from infra.process import Service
from streamrec.addresses import reachable
from streamrec.config import Settings


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamrec.cli", *args]


def stream_missing(settings: Settings) -> str | None:
    from features.stream_job import default_catalog

    catalog = default_catalog(settings)
    return None if catalog.is_file() else f"no item catalog at {catalog} yet (streamrec generate)"


def stream_service(settings: Settings) -> Service:
    """The stream job under ``infra.supervisor``: restarted with backoff after a crash or an outage."""
    from features.stream_job import StreamPaths
    from infra import supervisor

    paths = StreamPaths.of(settings)
    svc = Service(
        name="stream",
        argv=[],
        ready=lambda: False,
        data_dir=settings.data_path,
        env={"STREAMREC_DATA_DIR": str(settings.data_path)},
        start_timeout_s=300.0,  # a cold Spark start on 2 busy cores
        supervised=True,
    )
    svc.argv = [sys.executable, "-m", "infra.supervisor", "--state", str(svc.state_file), "--log", str(svc.log_file),
                "--", *_cli("stream")]

    def ready() -> bool:
        # Ready once this supervisor's current child has started its query (stale files name other pids).
        state = supervisor.read_state(svc.state_file) or {}
        child = state.get("child_pid")
        return child is not None and state.get("pid") == process.running_pid(svc) and paths.heartbeat_pid() == child

    svc.ready = ready
    return svc


def _healthz_answers(url: str):
    """A readiness check: ``url`` answers, and not with a server error (a 503 means not ready yet)."""

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    return ready


def ingest_service(settings: Settings) -> Service:
    """``streamrec ingest-http``: POST /events for HTTP producers and the web page."""
    port = settings.ingest.http_port
    return Service(
        name="ingest",
        argv=_cli("ingest-http", "--port", str(port)),
        ready=_healthz_answers(f"http://127.0.0.1:{port}/healthz"),
        data_dir=settings.data_path,
        env={"STREAMREC_DATA_DIR": str(settings.data_path)},
        start_timeout_s=60.0,
    )


def api_missing(settings: Settings) -> str | None:
    from models.retrieval import retrieval_dir

    path = retrieval_dir(settings)
    return None if path.is_dir() else f"no candidate generator at {path} yet (streamrec train)"


def api_service(settings: Settings) -> Service:
    return _pipeline_service(settings, "api", "serve", settings.serving.port)


def _pipeline_service(settings: Settings, name: str, command: str, port: int) -> Service:
    """A process that loads what the API loads (Feast, the candidate generator, the catalog), ready once its
    /healthz answers."""
    return Service(
        name=name,
        argv=_cli(command),
        ready=_healthz_answers(f"http://{reachable(settings.serving.host)}:{port}/healthz"),
        data_dir=settings.data_path,
        env={"STREAMREC_DATA_DIR": str(settings.data_path)},
        start_timeout_s=180.0,
    )


def rerank_worker_inside(settings: Settings) -> str | None:
    """Where the worker runs when not on its own: in the API, whose in-process re-rank cache only it can fill."""
    from serving.rerank.cache import backend

    return "api" if backend(settings) == "memory" else None


def rerank_worker_service(settings: Settings) -> Service:
    """``streamrec rerank-worker``: fills the Redis re-rank cache every API process reads (``serving.worker``);
    ready once it consumes the features topic and Redis answers (its /healthz)."""
    return _pipeline_service(settings, "rerank-worker", "rerank-worker", settings.serving.worker_port)


def model_status_url(settings: Settings) -> str:
    """TF Serving's model status API for the configured model (readiness, and the version ``infra status`` shows)."""
    m = settings.model
    return f"http://{reachable(m.host)}:{m.rest_port}/v1/models/{m.name}"


def model_server_service(settings: Settings, repo: Path | None = None) -> Service:
    """The model server as a pid-file daemon (``infra.process``), answering once its REST port does."""
    m = settings.model
    repo = Path(repo) if repo is not None else settings.data_path / "model_repo"
    argv = [
        sys.executable, "-m", "serving.model_server",
        "--repo", str(repo), "--name", m.name, "--grpc-port", str(m.grpc_port), "--rest-port", str(m.rest_port),
    ]
    return Service(
        name="model-server",
        argv=argv,
        # Any answer below 500, even NOT_FOUND before a first version exists, means it is up.
        ready=_healthz_answers(model_status_url(settings)),
        data_dir=settings.data_path,
        # The settings the flags do not carry; the child reads them from its environment.
        env={"STREAMREC_MODEL__HOST": m.host, "STREAMREC_MODEL__POLL_SECONDS": str(m.poll_seconds)},
        start_timeout_s=120.0,
    )
