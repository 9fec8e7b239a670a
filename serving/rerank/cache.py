"""A bounded, thread-safe LRU cache whose entries expire after a TTL."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


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

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
