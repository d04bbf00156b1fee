"""Bounded, expiring per-node tables: through a broker the bot hears a whole region, thousands of nodes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedTTL(Generic[K, V]):
    """A map that forgets entries after `ttl_s` and the least recently written past `max_items`. Thread-safe.

    `on_drop(key, value)` runs (outside the lock) for every entry forgotten that way, never for one popped,
    so a table of callbacks can promise that each is answered exactly once.
    """

    def __init__(
        self,
        max_items: int,
        ttl_s: float,
        clock: Callable[[], float],
        on_drop: Callable[[K, V], None] | None = None,
    ) -> None:
        self._max = max_items
        self._ttl = ttl_s
        self._clock = clock
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        """Store `value` (refreshing its age), forgetting the oldest entries past the bound."""
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (self._clock(), value)
            dropped = self._prune()
        self._report(dropped)

    def add_new(self, key: K, value: V) -> bool:
        """Store `value` unless `key` is present and fresh; True when it was new (a duplicate test)."""
        with self._lock:
            dropped = self._prune()
            new = key not in self._items
            if new:
                self._items[key] = (self._clock(), value)
                dropped += self._prune()
        self._report(dropped)
        return new

    def get(self, key: K) -> V | None:
        """The fresh value under `key`, or None."""
        with self._lock:
            dropped = self._prune()
            item = self._items.get(key)
        self._report(dropped)
        return None if item is None else item[1]

    def pop(self, key: K) -> V | None:
        """Remove and return the fresh value under `key`, or None."""
        with self._lock:
            dropped = self._prune()
            item = self._items.pop(key, None)
        self._report(dropped)
        return None if item is None else item[1]

    def expire(self) -> None:
        """Forget what is too old now (a periodic call, so that `on_drop` runs on time)."""
        with self._lock:
            dropped = self._prune()
        self._report(dropped)

    def snapshot(self) -> list[tuple[K, V]]:
        """The fresh entries, oldest first."""
        with self._lock:
            dropped = self._prune()
            items = [(key, value) for key, (_, value) in self._items.items()]
        self._report(dropped)
        return items

    def __len__(self) -> int:
        with self._lock:
            dropped = self._prune()
            size = len(self._items)
        self._report(dropped)
        return size

    def _prune(self) -> list[tuple[K, V]]:
        cutoff = self._clock() - self._ttl
        gone: list[tuple[K, V]] = []
        while self._items:
            key, (at, value) = next(iter(self._items.items()))
            if at >= cutoff and len(self._items) <= self._max:
                break
            del self._items[key]
            gone.append((key, value))
        return gone

    def _report(self, dropped: list[tuple[K, V]]) -> None:
        if self._on_drop is not None:
            for key, value in dropped:
                self._on_drop(key, value)


class Retransmits:
    """Envelopes awaiting their ACK, due to be published again (same packet id) until it comes or tries run out.

    What the firmware's reliable router does on air: a gateway that was away from the broker when the first copy
    went out gets the next one, and a handset that did hear the first drops the copy by its packet id.
    """

    def __init__(self, interval_s: float, transmissions: int, clock: Callable[[], float]) -> None:
        self._interval = interval_s
        self._transmissions = transmissions
        self._clock = clock
        self._lock = threading.Lock()
        self._copies: dict[int, tuple[str, bytes, float, int]] = {}  # id -> topic, payload, due, copies left

    def track(self, packet_id: int, topic: str, payload: bytes) -> None:
        """The first copy just went out; schedule the others."""
        if self._transmissions > 1:
            with self._lock:
                due = self._clock() + self._interval
                self._copies[packet_id] = (topic, payload, due, self._transmissions - 1)

    def forget(self, packet_id: int) -> None:
        """Its ACK (or NAK) came: no more copies."""
        with self._lock:
            self._copies.pop(packet_id, None)

    def due(self) -> list[tuple[int, str, bytes]]:
        """The copies to publish now (each counted as sent)."""
        now, out = self._clock(), []
        with self._lock:
            for packet_id, (topic, payload, due, left) in list(self._copies.items()):
                if now < due:
                    continue
                out.append((packet_id, topic, payload))
                if left > 1:
                    self._copies[packet_id] = (topic, payload, now + self._interval, left - 1)
                else:
                    del self._copies[packet_id]
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._copies)
