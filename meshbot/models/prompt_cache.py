"""A small LRU of saved engine states keyed by the tokens they hold, bounded in bytes. Pure: no engine here.

A follow-up's prompt starts with the previous turn's prompt and answer, so the state saved after that answer
holds most of the new prompt already: restoring it leaves only the new question to evaluate. Each conversation
keeps one entry (a newer state of the same conversation replaces the older, as it does any entry it extends); the least recently used
entries go once the total passes the capacity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass(frozen=True)
class Saved:
    """One saved state: the tokens it holds, the engine's opaque bytes and whose conversation it is."""

    tokens: tuple[int, ...]
    data: bytes
    conversation: str | None = None

    @property
    def nbytes(self) -> int:
        """RAM the entry costs (the state itself; the token tuple is small beside it)."""
        return len(self.data) + 8 * len(self.tokens)


class PrefixCache:
    """Saved states, least recently used first; `capacity_bytes` 0 keeps nothing."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[tuple[int, ...], Saved] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """RAM the saved states take now."""
        return sum(entry.nbytes for entry in self._entries.values())

    def best(self, tokens: Sequence[int], better_than: int = 0) -> tuple[Saved, int] | None:
        """The entry sharing the longest prefix with `tokens`, if longer than `better_than`, with that length."""
        found: tuple[Saved, int] | None = None
        for entry in self._entries.values():
            shared = common_prefix(entry.tokens, tokens)
            if shared > (found[1] if found else better_than):
                found = (entry, shared)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(found[0].tokens)
        return found

    def put(self, tokens: Sequence[int], data: bytes, conversation: str | None = None) -> None:
        """Save a state; the ones it supersedes are dropped, then the oldest until it fits.

        Superseded: an entry whose tokens it extends, or an older state of the same conversation (a
        re-read answer may tokenize differently from the tokens sampled, so a conversation's next state
        does not always extend its last one; only the newest is ever restored).
        """
        entry = Saved(tuple(tokens), data, conversation)
        if not entry.tokens or entry.nbytes > self.capacity_bytes:
            return
        for key, old in list(self._entries.items()):
            same = conversation is not None and old.conversation == conversation
            if same or common_prefix(key, entry.tokens) == len(key):
                del self._entries[key]
        self._entries[entry.tokens] = entry
        total = self.nbytes
        while total > self.capacity_bytes:
            _, dropped = self._entries.popitem(last=False)
            total -= dropped.nbytes

    def clear(self) -> None:
        """Drop every saved state."""
        self._entries.clear()
