"""Network addresses in settings: which are this machine's, and a ``host:port`` read with its default port."""
from __future__ import annotations

from urllib.parse import urlsplit

# The names a service on this machine is reached by: `infra up` runs such services itself (embedded).
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def reachable(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine: a wildcard bind is reached on loopback."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) as ``(host, port)``; loopback when the host is empty."""
    parts = urlsplit("//" + address.strip())
    return parts.hostname or "127.0.0.1", parts.port or default_port
