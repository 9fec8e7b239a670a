"""Bring the embedded stack up, report on it, and take it down.

Each component is a local daemon (``infra.process.Service``). Services the
settings point elsewhere (a real Kafka cluster, a hosted LLM) are reported as
external and never started; the project's own jobs wait until their inputs exist.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from infra import apps, broker, llm, process, redis, supervisor
from infra.process import Service
from serving.model_server.server import model_server_service
from streamrec.config import Settings
from streamrec.errors import UserError
from streams.kafka_util import ensure_topics


def _always(settings: Settings) -> bool:
    return True


@dataclass(frozen=True)
class Component:
    name: str
    service: Callable[[Settings], Service]
    runs_here: Callable[[Settings], bool] = _always  # False: an external service we only point at
    missing: Callable[[Settings], str | None] = lambda settings: None  # an input it needs that is absent


# Start order; stopped in reverse.
COMPONENTS: tuple[Component, ...] = (
    Component("broker", broker.broker_service, broker.is_embedded),
    Component("redis", redis.redis_service, redis.is_embedded),
    Component("llm", llm.llm_service, llm.is_embedded, missing=lambda s: "; ".join(llm.missing(s.llm.embedded_model)) or None),
    Component("model-server", model_server_service),
    Component("stream", apps.stream_service, missing=apps.stream_missing),
    Component("ingest", apps.ingest_service),
    Component("api", apps.api_service, missing=apps.api_missing),
)


def up(settings: Settings, only: list[str] | None = None, echo=print) -> None:
    for c in COMPONENTS:
        if only and c.name not in only:
            continue
        if not c.runs_here(settings):
            echo(f"{c.name}: external, not started here")
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


def status(settings: Settings) -> dict[str, str]:
    report = {}
    for c in COMPONENTS:
        if not c.runs_here(settings):
            report[c.name] = "external"
            continue
        svc = c.service(settings)
        pid = process.running_pid(svc)
        if svc.supervised:
            report[c.name] = supervisor.describe(supervisor.read_state(svc.state_file), alive=pid is not None)
        else:
            report[c.name] = f"running (pid {pid})" if pid else "stopped"
    return report


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
