"""Bring the embedded stack up, report on it, and take it down.

Each component is a local daemon (``infra.process.Service``) that is started
only when the settings point at a local address; remote services (a real
Kafka cluster, say) are checked, never started.
"""
from __future__ import annotations

from typing import Callable

from infra import broker, process, redis
from infra.process import Service
from streamrec.config import Settings
from streams.kafka_util import ensure_topics

# name -> (is it ours to run?, how to build it). Order = start order.
COMPONENTS: dict[str, tuple[Callable[[Settings], bool], Callable[[Settings], Service]]] = {
    "broker": (broker.is_embedded, broker.broker_service),
    "redis": (redis.is_embedded, redis.redis_service),
}


def up(settings: Settings, only: list[str] | None = None, echo=print) -> None:
    for name, (embedded, make) in COMPONENTS.items():
        if only and name not in only:
            continue
        if embedded(settings):
            svc = make(settings)
            pid = process.start(svc)
            echo(f"{name}: running (pid {pid}, log {svc.log_file})")
        else:
            echo(f"{name}: external, not started here")
    if not only or "broker" in only:
        created = ensure_topics(settings.kafka)
        echo(f"topics: {', '.join(created) if created else 'already present'}")


def status(settings: Settings) -> dict[str, str]:
    report = {}
    for name, (embedded, make) in COMPONENTS.items():
        if not embedded(settings):
            report[name] = "external"
            continue
        pid = process.running_pid(make(settings))
        report[name] = f"running (pid {pid})" if pid else "stopped"
    return report


def down(settings: Settings, echo=print) -> None:
    for name, (embedded, make) in reversed(list(COMPONENTS.items())):
        if embedded(settings):
            echo(f"{name}: {'stopped' if process.stop(make(settings)) else 'was not running'}")
