"""Bring the embedded stack up, report on it, and take it down.

Each component is a local daemon (``infra.process.Service``). Services the
settings point elsewhere (a real Kafka cluster, a hosted LLM) are reported as
external and never started; the project's own jobs wait until their inputs exist.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from infra import apps, broker, figures, llm, process, redis, supervisor
from infra.process import Service
from streamrec.addresses import host_port
from streamrec.config import Settings
from streamrec.errors import UserError
from streams.kafka_util import KAFKA_PORT, ensure_topics


def _always(settings: Settings) -> bool:
    return True


def _broker_address(settings: Settings) -> tuple[str, int]:
    return host_port(settings.kafka.bootstrap_servers.split(",")[0], KAFKA_PORT)


def _nothing(settings: Settings) -> None:
    return None


@dataclass(frozen=True)
class Component:
    name: str
    service: Callable[[Settings], Service]
    runs_here: Callable[[Settings], bool] = _always  # False: an external service we only point at
    missing: Callable[[Settings], str | None] = _nothing  # an input it needs that is absent
    port: Callable[[Settings], str] = lambda settings: "-"  # what it listens on, for `infra status`
    figure: Callable[[Settings], str | None] = _nothing  # its key figure, read from the running service
    # Whether it answers, for `infra status`, where the start-up probe (`Service.ready`) would cost too much.
    healthy: Callable[[Settings], bool] | None = None
    # The component it runs inside with these settings (None: on its own), e.g. the worker inside the API.
    inside: Callable[[Settings], str | None] = _nothing


# Start order; stopped in reverse.
COMPONENTS: tuple[Component, ...] = (
    # The broker's start-up probe reads its whole snapshot file: status asks only whether its port answers.
    Component("broker", broker.broker_service, broker.is_embedded, figure=figures.broker_figure,
              port=lambda s: str(_broker_address(s)[1]), healthy=lambda s: broker.port_open(*_broker_address(s))),
    Component("redis", redis.redis_service, redis.is_embedded, figure=figures.redis_figure,
              port=lambda s: str(redis.host_port(s)[1])),
    Component("llm", llm.llm_service, llm.is_embedded, missing=lambda s: "; ".join(llm.missing(s.llm.embedded_model)) or None,
              port=lambda s: str(s.llm.port), figure=figures.llm_figure),
    Component("model-server", apps.model_server_service, figure=figures.model_server_figure,
              port=lambda s: f"{s.model.grpc_port} grpc, {s.model.rest_port} rest"),
    Component("stream", apps.stream_service, missing=apps.stream_missing, figure=figures.stream_figure,
              port=lambda s: f"{s.spark.metrics_port} metrics" if s.spark.metrics_port else "-"),
    Component("ingest", apps.ingest_service, port=lambda s: str(s.ingest.http_port)),
    Component("api", apps.api_service, missing=apps.api_missing, port=lambda s: str(s.serving.port)),
    # With the Redis re-rank cache a process of its own (needs what the API needs); with the in-process one, in the API.
    Component("rerank-worker", apps.rerank_worker_service, missing=apps.api_missing,
              port=lambda s: f"{s.serving.worker_port} health, metrics", inside=apps.rerank_worker_inside),
)


def up(settings: Settings, only: list[str] | None = None, echo=print) -> None:
    for c in COMPONENTS:
        if only and c.name not in only:
            continue
        if not c.runs_here(settings):
            echo(f"{c.name}: external, not started here")
            continue
        if (host := c.inside(settings)) is not None:
            echo(f"{c.name}: runs inside {host}")
            continue
        if (why := c.missing(settings)) is not None:
            echo(f"{c.name}: not started: {why}")
            continue
        svc = c.service(settings)
        pid = process.start(svc)
        echo(f"{c.name}: running (pid {pid}, log {svc.log_file})")
        if c.name == "llm" and not llm.serves_configured_model(settings):
            echo(f"llm: warning: the running server does not serve {settings.llm.embedded_model} (started with other "
                 "weights?): `streamrec infra down` and `up` again to switch")
        if c.name == "broker":
            created = ensure_topics(settings.kafka)
            echo(f"topics: {', '.join(created) if created else 'already present'}")


@dataclass(frozen=True)
class Status:
    """A row of ``infra status``; ``healthy`` is the service's readiness probe (None: not running here)."""

    service: str
    state: str
    pid: int | None = None
    port: str = "-"
    healthy: bool | None = None
    uptime_s: float | None = None
    figure: str | None = None

    @property
    def running(self) -> bool:
        return self.state.startswith(("running", "external", "inside"))


def status(settings: Settings) -> list[Status]:
    rows = []
    for c in COMPONENTS:
        if not c.runs_here(settings):
            rows.append(Status(c.name, "external", port=c.port(settings)))
            continue
        if (host := c.inside(settings)) is not None:
            rows.append(Status(c.name, f"inside {host}"))
            continue
        svc = c.service(settings)
        pid = process.running_pid(svc)
        if svc.supervised:
            state = supervisor.describe(supervisor.read_state(svc.state_file), alive=pid is not None)
        else:
            state = "running" if pid else "stopped"
        if pid is None:
            rows.append(Status(c.name, state, port=c.port(settings)))
            continue
        try:  # the pid file is written when the service starts
            uptime = time.time() - svc.pid_file.stat().st_mtime
        except OSError:
            uptime = None
        healthy = c.healthy(settings) if c.healthy else svc.ready()
        rows.append(Status(c.name, state, pid, c.port(settings), healthy, uptime, c.figure(settings)))
    return rows


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s"


def status_table(rows: list[Status]) -> str:
    """The rows as an aligned text table (one line per service)."""
    header = ("SERVICE", "STATE", "PID", "PORT", "HEALTHY", "UPTIME", "FIGURE")
    cells = [header] + [(r.service, r.state, str(r.pid or "-"), r.port,
                         {True: "yes", False: "no", None: "-"}[r.healthy], _duration(r.uptime_s), r.figure or "-")
                        for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
                     for row in cells)


def logs(settings: Settings, names: list[str], lines: int = 20, follow: bool = False, echo=print,
         poll_s: float = 0.5) -> None:
    """The last ``lines`` of each named service's log (all when ``names`` is empty); ``follow``: then what is appended."""
    import time

    known = [c.name for c in COMPONENTS]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise UserError(f"no service {', '.join(unknown)}; the services: {', '.join(known)}")
    files = {c.name: c.service(settings).log_file for c in COMPONENTS if not names or c.name in names}
    offsets = {}
    for name, path in files.items():
        offsets[name] = path.stat().st_size if path.exists() else 0
        echo(f"== {name} ({path})" + ("" if offsets[name] else ": no log yet"))
        for line in process.tail_lines(path, lines):
            echo(line)
    while follow:
        time.sleep(poll_s)
        for name, path in files.items():
            size = path.stat().st_size if path.exists() else offsets[name]
            if size == offsets[name]:
                continue
            with path.open("rb") as f:
                f.seek(offsets[name] if size > offsets[name] else 0)  # a truncated log starts over
                data = f.read()
                offsets[name] = f.tell()
            for line in data.decode(errors="replace").splitlines():
                echo(f"{name}: {line}" if len(files) > 1 else line)


def down(settings: Settings, echo=print) -> None:
    for c in reversed(COMPONENTS):
        if c.runs_here(settings):
            echo(f"{c.name}: {'stopped' if process.stop(c.service(settings)) else 'was not running'}")
