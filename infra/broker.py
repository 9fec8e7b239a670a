"""The embedded Kafka-protocol broker: noida-db (the ``noida-db`` wheel), Kafka service only.

Started only when ``kafka.bootstrap_servers`` is a single loopback address; for a
real cluster ``infra up`` just checks that it answers and creates the topics.
noida-db keeps its whole log in memory and rewrites one JSON snapshot,
``<data>/broker/kafka.json``, about every second and on SIGTERM; a restart loads it.
A clean stop loses nothing once producers have stopped (``infra down`` stops the
broker last); a crash (kill -9, power loss: no fsync) loses the records acknowledged
since the last snapshot, and new records then reuse their offsets.
"""
from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

from infra.process import Service
from streamrec.addresses import host_port
from streamrec.config import Settings
from streamrec.errors import UserError
from streams.kafka_util import KAFKA_PORT, single_local_broker

# A topic's entry in the snapshot. Record bytes are stored as arrays of numbers, so no record can match.
_SNAPSHOT_TOPIC = re.compile(rb'\["([^"\\]+)",\{"name":"\1","is_internal":false')


def is_embedded(settings: Settings) -> bool:
    return single_local_broker(settings.kafka)


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _binary() -> str:
    """The Rust binary inside the wheel. Not the ``noida-db`` console script: that Python wrapper runs the
    binary as its child and does not pass SIGTERM on, so stopping it would orphan a broker that never saves."""
    from importlib.resources import files

    try:
        path = Path(str(files("noida_db").joinpath("noida-db")))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise UserError("the noida-db broker is not installed (pip install noida-db)")
    return str(path)


def snapshot_topics(data_dir: Path) -> set[str]:
    """The user topics in the broker's snapshot under ``data_dir`` (none if there is no snapshot)."""
    import mmap

    try:
        with open(data_dir / "kafka.json", "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as snap:
            return {m.group(1).decode() for m in _SNAPSHOT_TOPIC.finditer(snap)}
    except (FileNotFoundError, ValueError):  # ValueError: an empty file cannot be mapped
        return set()


def _restored(host: str, port: int, data_dir: Path) -> Callable[[], bool]:
    """Ready once a metadata round trip lists every topic of the snapshot. The port opens before the
    snapshot is loaded, and noida-db writes nothing to its log when loading ends."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    seen: dict = {}  # the snapshot's topics, re-read only when the file changes (it may be 100s of MB)

    def ready() -> bool:
        if not port_open(host, port):
            return False
        try:
            stat = (data_dir / "kafka.json").stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            key = None
        if seen.get("key", ()) != key:
            seen.update(key=key, topics=snapshot_topics(data_dir))
        try:
            admin = KafkaAdminClient(bootstrap_servers=[address], bootstrap_timeout_ms=2000, request_timeout_ms=2000)
        except KafkaError:
            return False  # still loading: it accepts connections but answers nothing yet
        try:
            return seen["topics"] <= set(admin.list_topics())
        except KafkaError:
            return False
        finally:
            admin.close()

    return ready


def broker_service(settings: Settings) -> Service:
    host, port = host_port(settings.kafka.bootstrap_servers, KAFKA_PORT)
    host = "127.0.0.1" if host == "localhost" else host
    data_dir = settings.data_path / "broker"
    # noida-db has no advertised-address option: it advertises the address it binds, which is ours.
    return Service(
        name="broker",
        argv=[_binary(), "start", "--data-dir", str(data_dir), "--only", "kafka",
              "--host", host, "--kafka-port", str(port)],
        ready=_restored(host, port, data_dir),
        data_dir=settings.data_path,
        start_timeout_s=120.0,  # loading the snapshot: ~3 s at 400k records, and it grows with the log
        stop_timeout_s=60.0,  # its final snapshot: 2.4 s at 200k records, 8.8 s at 400k
    )
