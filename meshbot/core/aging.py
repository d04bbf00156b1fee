"""A set of keys that forgets: each key for at most `max_age_s`, and the oldest first past `max_items`. Pure."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class AgedSet:
    """Remembers when each key was added; bounded in count and in age, so per-node state cannot pile up."""

    def __init__(self, max_items: int, max_age_s: float) -> None:
        if max_items < 1 or max_age_s <= 0:
            raise ValueError(f"an AgedSet needs room and time (got {max_items}, {max_age_s})")
        self._max = max_items
        self._age = max_age_s
        self._at: OrderedDict[Hashable, float] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._at)

    def first_time(self, key: Hashable, now: float) -> bool:
        """True (and remember `key` from `now`) unless it was added less than `max_age_s` ago."""
        self._forget_old(now)
        if key in self._at:
            return False
        self._at[key] = now
        while len(self._at) > self._max:
            self._at.popitem(last=False)
        return True

    def discard(self, key: Hashable) -> None:
        """Forget `key` now."""
        self._at.pop(key, None)

    def _forget_old(self, now: float) -> None:
        while self._at:
            key, at = next(iter(self._at.items()))
            if now - at < self._age:
                return
            del self._at[key]
