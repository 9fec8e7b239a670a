"""The embedded Redis server: Feast's online store (``feast.online_store: redis``, the default).

Started only when ``feast.redis_connection`` names a loopback address; a remote
Redis is the operator's. It persists to an append-only file under ``<data>/redis``,
fsynced every write, so a restart (clean or kill -9) keeps every feature row the
stream job has reported written.
"""
from __future__ import annotations

import shutil

from infra.process import Service
from streamrec.addresses import LOOPBACK
from streamrec.config import Settings
from streamrec.errors import UserError


def host_port(settings: Settings) -> tuple[str, int]:
    """Host and port of ``feast.redis_connection`` (Feast's ``host:port[,option=value...]``);
    ``feast.redis_port`` when it names no port."""
    address = settings.feast.redis_connection.split(",")[0].strip()
    host, sep, port = address.rpartition(":")
    if not sep:
        return address or "127.0.0.1", settings.feast.redis_port
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise UserError(f"feast.redis_connection {settings.feast.redis_connection!r}: port {port!r} is not a number") from None


def is_embedded(settings: Settings) -> bool:
    return settings.feast.online_store == "redis" and host_port(settings)[0] in LOOPBACK


def ping(host: str, port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(host=host, port=port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_service(settings: Settings) -> Service:
    binary = shutil.which("redis-server")
    if binary is None:
        raise UserError("redis-server is not installed; run: bash infra/install_redis.sh")
    host, port = host_port(settings)
    host = "127.0.0.1" if host == "localhost" else host
    workdir = settings.data_path / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    return Service(
        name="redis",
        argv=[binary, "--port", str(port), "--bind", host, "--dir", str(workdir), "--save", "",
              "--appendonly", "yes", "--appendfsync", "always"],
        ready=lambda: ping(host, port),
        data_dir=settings.data_path,
        start_timeout_s=20.0,
    )
