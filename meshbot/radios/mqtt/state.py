"""Bounded, expiring per-node tables: through a broker the bot hears a whole region, thousands of nodes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedTTL(Generic[K, V]):
    """A map that forgets entries after `ttl_s` and the least recently written past `max_items`. Thread-safe."""

    def __init__(self, max_items: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self._max = max_items
        self._ttl = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        """Store `value` (refreshing its age), evicting the oldest entries past the bound."""
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (self._clock(), value)
            self._prune()

    def add_new(self, key: K, value: V) -> bool:
        """Store `value` unless `key` is present and fresh; True when it was new (a duplicate test)."""
        with self._lock:
            self._prune()
            if key in self._items:
                return False
            self._items[key] = (self._clock(), value)
            self._prune()
            return True

    def get(self, key: K) -> V | None:
        """The fresh value under `key`, or None."""
        with self._lock:
            self._prune()
            item = self._items.get(key)
            return None if item is None else item[1]

    def pop(self, key: K) -> V | None:
        """Remove and return the fresh value under `key`, or None."""
        with self._lock:
            self._prune()
            item = self._items.pop(key, None)
            return None if item is None else item[1]

    def pop_expired(self) -> list[tuple[K, V]]:
        """Remove and return every entry older than the TTL (for callers that must act on expiry)."""
        with self._lock:
            return self._drop_old()

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return len(self._items)

    def _prune(self) -> None:
        self._drop_old()
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def _drop_old(self) -> list[tuple[K, V]]:
        cutoff = self._clock() - self._ttl
        gone: list[tuple[K, V]] = []
        while self._items:
            key, (at, value) = next(iter(self._items.items()))
            if at >= cutoff:
                break
            del self._items[key]
            gone.append((key, value))
        return gone
