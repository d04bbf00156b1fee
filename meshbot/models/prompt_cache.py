"""A small LRU of saved engine states keyed by the tokens they hold, bounded in bytes; the evicted spill to disk.

A follow-up's prompt starts with the previous turn's prompt and answer, so the state saved after that answer
holds most of the new prompt already: restoring it leaves only the new question to evaluate. Each conversation
keeps one entry (a newer state of the same conversation replaces the older, as it does any entry it extends); the least recently used
entries go once the total passes the capacity.
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def pages(size: int) -> mmap.mmap:
    """Zeroed RAM for one saved state, mapped on its own, so that dropping the state gives it back to the OS."""
    # States are 5-30 MB and differ in size. Through malloc, glibc's sliding mmap threshold puts them on the heap
    # once one is freed, and the holes they leave keep the process far above the states in use (measured: 230 MB
    # of free heap behind 128 MB of states, still growing after two hours).
    return mmap.mmap(-1, max(size, 1))


def read_pages(path: Path) -> mmap.mmap:
    """A spilled state read back into `pages` of its own."""
    with path.open("rb") as file:
        data = pages(os.fstat(file.fileno()).st_size)
        if file.readinto(data) != len(data):
            raise OSError(f"{path}: shorter than it was written")
    return data


@dataclass(frozen=True)
class Saved:
    """One saved state: the tokens it holds, the engine's opaque bytes and whose conversation it is."""

    tokens: tuple[int, ...]
    data: bytes | mmap.mmap
    conversation: str | None = None

    @property
    def nbytes(self) -> int:
        """RAM the entry costs (the state itself; the token tuple is small beside it)."""
        return len(self.data) + 8 * len(self.tokens)


def _supersedes(new: Saved, old_tokens: tuple[int, ...], old_conversation: str | None) -> bool:
    same = new.conversation is not None and old_conversation == new.conversation
    return same or common_prefix(old_tokens, new.tokens) == len(old_tokens)


_PREFIX = "meshbot-kv-"  # then the writing process's id


def _remove_orphans(parent: Path) -> None:
    # A process killed with SIGKILL leaves its directory behind: the next start removes it.
    for path in parent.glob(f"{_PREFIX}*"):
        pid = path.name[len(_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing saved KV states left by process %s: %s", pid, path)
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SpillDir:
    """States pushed out of RAM, one file each in a directory of this process's own, bounded in bytes.

    Reading one back (tens of milliseconds) beats evaluating a long history again (seconds on a Pi). A state
    belongs to the engine that wrote it, so the directory is this process's own, removed at `close` (or, after a
    SIGKILL, by the next start).
    """

    def __init__(self, capacity_bytes: int, parent: str | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        parent_dir = Path(parent or tempfile.gettempdir())
        _remove_orphans(parent_dir)
        self.path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent_dir))
        self._entries: OrderedDict[tuple[int, ...], tuple[Path, int, str | None]] = OrderedDict()
        self._serial = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Disk the spilled states take now."""
        return sum(size for _, size, _ in self._entries.values())

    def put(self, entry: Saved) -> None:
        """Write a state out (dropping those it supersedes, then the oldest past the capacity)."""
        self.drop_superseded(entry)
        if entry.nbytes > self.capacity_bytes:
            return
        self._serial += 1
        path = self.path / f"{self._serial}.kv"
        try:
            path.write_bytes(entry.data)
        except OSError as exc:  # a full disk only costs a re-read of that history
            log.warning("could not spill a saved KV state to %s: %s", self.path, exc)
            path.unlink(missing_ok=True)
            return
        self._entries[entry.tokens] = (path, entry.nbytes, entry.conversation)
        while self.nbytes > self.capacity_bytes:
            self._drop(next(iter(self._entries)))

    def drop_superseded(self, entry: Saved) -> None:
        """Forget the spilled states that `entry` replaces."""
        for key, (_, _, conversation) in list(self._entries.items()):
            if _supersedes(entry, key, conversation):
                self._drop(key)

    def best(self, tokens: Sequence[int], better_than: int) -> tuple[tuple[int, ...], int] | None:
        """The key of the spilled state sharing the longest prefix with `tokens`, if longer than `better_than`."""
        found: tuple[tuple[int, ...], int] | None = None
        for key in self._entries:
            shared = common_prefix(key, tokens)
            if shared > (found[1] if found else better_than):
                found = (key, shared)
        return found

    def key_of(self, conversation: str) -> tuple[int, ...] | None:
        """The key of the conversation's spilled state, if one is here."""
        return next((key for key, (_, _, owner) in self._entries.items() if owner == conversation), None)

    def take(self, key: tuple[int, ...]) -> Saved | None:
        """Read a spilled state back (it leaves the directory); None if its file is gone."""
        path, _, conversation = self._entries[key]
        try:
            data: mmap.mmap | None = read_pages(path)
        except OSError as exc:
            log.warning("could not read a spilled KV state back: %s", exc)
            data = None
        self._drop(key)
        return None if data is None else Saved(key, data, conversation)

    def _drop(self, key: tuple[int, ...]) -> None:
        path, _, _ = self._entries.pop(key)
        path.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the directory and every state in it."""
        self._entries.clear()
        shutil.rmtree(self.path, ignore_errors=True)


class PrefixCache:
    """Saved states, least recently used first; `capacity_bytes` 0 keeps nothing; the evicted go to `spill`."""

    def __init__(self, capacity_bytes: int, spill: SpillDir | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        self.spill = spill
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
        found = self._from_spill(tokens, found[1] if found else better_than) or found
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(found[0].tokens)
        return found

    def of_conversation(self, conversation: str) -> Saved | None:
        """The conversation's own saved state (read back from disk if it went there), made the most recent."""
        entry = next((e for e in self._entries.values() if e.conversation == conversation), None)
        if entry is None and self.spill is not None:
            key = self.spill.key_of(conversation)
            entry = self.spill.take(key) if key is not None else None
            if entry is not None:
                self.put(entry.tokens, entry.data, entry.conversation)
        if entry is None or entry.tokens not in self._entries:
            return None
        self._entries.move_to_end(entry.tokens)
        return entry

    def _from_spill(self, tokens: Sequence[int], better_than: int) -> tuple[Saved, int] | None:
        spilled = self.spill.best(tokens, better_than) if self.spill is not None else None
        if self.spill is None or spilled is None:
            return None
        entry = self.spill.take(spilled[0])
        if entry is None:
            return None
        self.put(entry.tokens, entry.data, entry.conversation)  # back in RAM, most recent
        return (entry, spilled[1]) if entry.tokens in self._entries else None

    def put(self, tokens: Sequence[int], data: bytes | mmap.mmap, conversation: str | None = None) -> None:
        """Save a state; the ones it supersedes are dropped, then the oldest until it fits.

        Superseded: an entry whose tokens it extends, or an older state of the same conversation (a
        re-read answer may tokenize differently from the tokens sampled, so a conversation's next state
        does not always extend its last one; only the newest is ever restored).
        """
        entry = Saved(tuple(tokens), data, conversation)
        if not entry.tokens or entry.nbytes > self.capacity_bytes:
            return
        for key, old in list(self._entries.items()):
            if _supersedes(entry, key, old.conversation):
                del self._entries[key]
        if self.spill is not None:
            self.spill.drop_superseded(entry)
        self._entries[entry.tokens] = entry
        total = self.nbytes
        while total > self.capacity_bytes:
            _, dropped = self._entries.popitem(last=False)
            total -= dropped.nbytes
            if self.spill is not None:
                self.spill.put(dropped)

    def clear(self) -> None:
        """Drop every saved state."""
        self._entries.clear()

    def close(self) -> None:
        """Drop every saved state, spilled ones included."""
        self.clear()
        if self.spill is not None:
            self.spill.close()
