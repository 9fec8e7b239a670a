"""Fair admission of LLM calls: one pending call per user and per client, and a per-client rate limit.

The LLM is slow (a local model takes ~10 s a call) and only ``max_pending`` calls may wait, so
without this one caller asking many distinct requests fills the queue and every other user gets
the W&D order. A request joins the call already in flight for its exact key (free). A new call is
refused as ``busy`` while its user or its client has another one pending, ``overloaded`` when
``max_pending`` are pending, and ``rate_limited`` beyond the client's calls per minute.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

Holder = tuple[str, str]  # ("user", user_id) or ("client", client)


class FairQueue:
    """Which LLM call a request joins or may start; thread-safe."""

    def __init__(self, max_pending: int, calls_per_minute: int) -> None:
        self.max_pending = max_pending
        self._limit = RateLimitItemPerMinute(calls_per_minute) if calls_per_minute > 0 else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._lock = threading.Lock()
        self._calls: dict[Hashable, tuple[Future, tuple[Holder, ...]]] = {}  # key -> (call, who holds it)
        self._held: dict[Holder, Hashable] = {}  # holder -> key of its pending call

    def admit(self, key: Hashable, user_id: str, client: str | None, start: Callable[[], Future], *,
              limited: bool = True) -> Future | str:
        """The call in flight for ``key``, else the one ``start`` starts now, else the status refusing it
        (``busy``, ``overloaded``, ``rate_limited``). Without a client the user stands in for it in the
        rate limit; ``limited=False`` skips the rate limit (the server's own refreshes)."""
        user = ("user", user_id)
        holders = (user,) if client is None else (user, ("client", client))
        with self._lock:
            if key in self._calls:
                return self._calls[key][0]
            if any(h in self._held for h in holders):
                return "busy"
            if len(self._calls) >= self.max_pending:
                return "overloaded"
            # Counted last, so only calls that really start use it up; by client, else by user (holders[-1]).
            if limited and self._limit is not None and not self._limiter.hit(self._limit, *holders[-1]):
                return "rate_limited"
            # release() takes the same lock, so a call that ends at once is not released before this.
            future = start()
            self._calls[key] = (future, holders)
            self._held.update((h, key) for h in holders)
            return future

    def release(self, key: Hashable) -> None:
        """Free the slots of the call for ``key``: it has ended, one way or another."""
        with self._lock:
            _, holders = self._calls.pop(key, (None, ()))
            for h in holders:
                del self._held[h]

    def clear(self) -> None:
        """Free every slot (on close: calls cancelled while queued never end to release theirs)."""
        with self._lock:
            self._calls.clear()
            self._held.clear()
