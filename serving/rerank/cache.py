"""The re-rank cache: ``get(key) -> (value, age_s) | None`` and ``put(key, value)``, in two backends.

- ``TTLCache``: this process's memory, a bounded LRU whose entries expire after a TTL;
- ``RedisCache``: shared by every process on one Redis (``feast.redis_connection``), so API replicas
  and the separate ``streamrec rerank-worker`` see one cache. Entries expire by Redis's own TTL (the
  bound on their number is that TTL); keys are ``<namespace>:<SHA-1 of the key as canonical JSON>``;
  values are JSON (the caller's ``encode``/``decode``, never pickle: a shared store must not be able to
  run code in the API) with the time they were stored, which gives the age in every process.

``serving.rerank_cache`` picks one (``backend``). A Redis that does not answer never fails a request:
a read error is a miss, a write error is dropped, both logged and counted (``streamrec_rerank_cache_errors``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from streamrec.config import Settings

if TYPE_CHECKING:
    import redis
    from prometheus_client import Counter

log = logging.getLogger(__name__)

V = TypeVar("V")
Backend = Literal["memory", "redis"]
# A request must not wait on a Redis in trouble: its whole budget is ~20 ms without the LLM.
SOCKET_TIMEOUT_S = 0.25
# After a failure Redis is not asked again for this long (every get a miss, every put dropped, counted):
# a blackholed address would otherwise cost each request the socket timeout, and log a line each.
OUTAGE_BACKOFF_S = 1.0
OWNER = "owner"  # <namespace>:owner:<user id>: the set of that user's entries


class Cache(Protocol[V]):
    def get(self, key: Hashable) -> tuple[V, float] | None:
        """The value and its age in seconds, or None when absent, expired or unreadable."""

    def put(self, key: Hashable, value: V, owner: str | None = None) -> None:
        """``owner``: the user the entry is about, if any (``forget_owner`` removes their entries)."""

    def state(self) -> dict:
        """For health checks: ``{"backend": ..., "state": "ok" | "error", ...}``."""


def backend(settings: Settings) -> Backend:
    """``serving.rerank_cache`` resolved: "auto" is Redis when Feast's online store is."""
    choice = settings.serving.rerank_cache
    if choice == "auto":
        return "redis" if settings.feast.online_store == "redis" else "memory"
    return choice


class TTLCache(Generic[V]):
    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        if max_entries < 1 or not ttl_s > 0:
            raise ValueError(f"need max_entries >= 1 and ttl_s > 0, got {max_entries}, {ttl_s}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()  # key -> (stored at, value)
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[V, float] | None:
        """The value and its age in seconds, or None when absent or expired."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored, value = entry
            age = self._clock() - stored
            if age >= self.ttl_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value, age

    def put(self, key: Hashable, value: V, owner: str | None = None) -> None:
        # The owner is not kept: no other process can reach this cache to forget a user (its TTL does).
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def state(self) -> dict:
        return {"backend": "memory", "state": "ok", "entries": len(self)}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def redis_client(settings: Settings) -> redis.Redis:
    """A client of ``feast.redis_connection``, parsed by Feast's own parser as the online store and the stream
    job's writer parse it (``host:port[,password=...,ssl=true,db=N]``; no port: ``feast.redis_port``)."""
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    nodes, options = RedisOnlineStore._parse_connection_string(settings.feast.redis_connection)
    node = nodes[0] if nodes else {}
    # One retry (a pooled connection Redis closed while idle), no backoff: redis-py's default retries for seconds.
    return redis.Redis(host=node.get("host") or "127.0.0.1", port=int(node.get("port") or settings.feast.redis_port),
                       socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
                       retry=Retry(NoBackoff(), 1), **options)


def forget_owner(client: redis.Redis, prefix: str, owner: str) -> int:
    """Delete every entry about ``owner`` in the namespaces under ``prefix``; returns how many there were."""
    removed = 0
    for index in client.scan_iter(match=f"{prefix}:*:{OWNER}:{owner}"):
        entries = client.smembers(index)
        removed += int(client.delete(*entries)) if entries else 0
        client.delete(index)
    return removed


def redis_key(namespace: str, key: Hashable) -> str:
    """``namespace:`` + the SHA-1 of ``key`` as canonical JSON (tuples as lists): equal in every process."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{namespace}:{hashlib.sha1(text.encode('utf-8')).hexdigest()}"


class RedisCache(Generic[V]):
    """``encode``: a value as JSON-able data; ``decode``: back (raising ``ValueError``, ``KeyError`` or
    ``TypeError`` on data it does not know, which is then a miss). ``errors``: a counter labelled by op."""

    def __init__(self, client: redis.Redis, namespace: str, ttl_s: float, encode: Callable[[V], Any],
                 decode: Callable[[Any], V], errors: Counter, clock: Callable[[], float] = time.time):
        if not ttl_s > 0:
            raise ValueError(f"need ttl_s > 0, got {ttl_s}")
        self.client = client
        self.namespace = namespace
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self._encode, self._decode = encode, decode
        self._errors = errors
        self._clock = clock  # wall time: the age is read in other processes than the one that stored
        self._down_until = 0.0  # time.monotonic() before which Redis is not asked (after a failure)

    def get(self, key: Hashable) -> tuple[V, float] | None:
        import redis

        if self._backing_off("get"):
            return None
        try:
            raw = self.client.get(redis_key(self.namespace, key))
        except redis.RedisError as e:
            self._failed("get", e)
            return None
        self._answered()
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            value, stored = self._decode(entry["value"]), float(entry["at"])
        except (ValueError, KeyError, TypeError) as e:  # written by another version, or not by us
            log.warning("re-rank cache: unreadable entry for %s: %s", self.namespace, e)
            self._errors.labels("decode").inc()
            return None
        return value, max(self._clock() - stored, 0.0)  # clocks of two hosts may disagree slightly

    def put(self, key: Hashable, value: V, owner: str | None = None) -> None:
        import redis

        if self._backing_off("put"):
            return
        data = json.dumps({"at": self._clock(), "value": self._encode(value)}, separators=(",", ":"))
        entry = redis_key(self.namespace, key)
        try:
            with self.client.pipeline(transaction=False) as p:
                p.set(entry, data, px=self.ttl_ms)
                if owner is not None:  # the owner's index of entries, living as long as the newest of them
                    index = f"{self.namespace}:{OWNER}:{owner}"
                    p.sadd(index, entry)
                    p.pexpire(index, self.ttl_ms)
                p.execute()
        except redis.RedisError as e:
            self._failed("put", e)
            return
        self._answered()

    def state(self) -> dict:
        import redis

        address = self.client.connection_pool.connection_kwargs
        where = {"backend": "redis", "address": f"{address.get('host')}:{address.get('port')}"}
        try:
            self.client.ping()
        except redis.RedisError as e:
            return {**where, "state": "error", "detail": f"{type(e).__name__}: {e}"}
        return {**where, "state": "ok"}

    def _backing_off(self, op: str) -> bool:
        if self._down_until and time.monotonic() < self._down_until:
            self._errors.labels(op).inc()
            return True
        return False

    def _failed(self, op: str, error: Exception) -> None:
        if not self._down_until:  # one line per outage, not one per request
            log.warning("re-rank cache: Redis does not answer (%s: %s); serving without the shared cache, "
                        "retrying every %.0fs", type(error).__name__, error, OUTAGE_BACKOFF_S)
        self._errors.labels(op).inc()
        self._down_until = time.monotonic() + OUTAGE_BACKOFF_S

    def _answered(self) -> None:
        if self._down_until:
            log.warning("re-rank cache: Redis answers again")
            self._down_until = 0.0
