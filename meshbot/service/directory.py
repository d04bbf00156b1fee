"""The running node directory: every node the transports hear about, bounded, kept in the store across restarts.

The radio's thread calls `note` for each `NodeReport` (a dict update under a lock, nothing slow); a companion
thread writes the changed records to the store every `FLUSH_EVERY_S` and at stop, and forgets nodes unheard for
`[mesh_directory] ttl_days`. At most `max_nodes` are kept: the longest unheard goes first, never the bot's own.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from meshbot.core.config_sections import MeshDirectoryConfig
from meshbot.core.directory import NodeRecord, NodeReport, bare_words, find, parse_label
from meshbot.core.events import Event

if TYPE_CHECKING:
    from meshbot.service.daemon import Daemon

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 30.0
DAY_S = 86_400.0


class DirectoryTable(Protocol):
    """Where records persist (storage/directory.py)."""

    def load(self) -> list[NodeRecord]:
        """Every stored record."""

    def save(self, records: list[NodeRecord], gone: list[int]) -> None:
        """Write `records` and delete the nodes in `gone`, in one transaction."""


class MeshDirectory:
    """A `NodeDirectory` fed by `NodeReport`s; thread-safe."""

    def __init__(
        self,
        cfg: MeshDirectoryConfig,
        table: DirectoryTable | None = None,
        wall: Callable[[], float] = time.time,
        fallback_names: Callable[[int], str | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._table = table
        self._wall = wall
        self._fallback_names = fallback_names
        self._lock = threading.Lock()
        self._nodes: dict[int, NodeRecord] = {}
        self._by_name: dict[str, set[int]] = {}  # folded short and long names -> nodes
        self._dirty: set[int] = set()
        self._gone: set[int] = set()
        self._own: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if table is not None:
            for record in table.load():
                self._nodes[record.node] = record
                self._index(None, record)
                if record.is_self:
                    self._own = record.node
            self.forget_stale()

    # -- fed by the transports (on their threads) ------------------------------------------------
    def note(self, report: NodeReport) -> None:
        """Merge one report; evict the longest-unheard node when over `max_nodes`."""
        with self._lock:
            if report.is_self and self._own is not None and self._own != report.node:
                old = self._nodes.get(self._own)  # the radio was swapped: the old node is a peer now
                if old is not None:
                    self._nodes[old.node] = dataclasses.replace(old, is_self=False)
            if report.is_self:
                self._own = report.node
            record = self._nodes.get(report.node) or NodeRecord(report.node)
            merged = self._nodes[report.node] = record.merge(report)
            if merged.user != record.user:
                self._index(record, merged)
            self._dirty.add(report.node)
            self._gone.discard(report.node)
            if len(self._nodes) > self.cfg.max_nodes:
                self._evict()

    def _evict(self) -> None:
        # A few more than the excess (2%): a busy region adds nodes one by one, and each sort costs them all.
        excess = len(self._nodes) - self.cfg.max_nodes + self.cfg.max_nodes // 50
        peers = [r for r in self._nodes.values() if r.node != self._own]
        for record in heapq.nsmallest(excess, peers, key=lambda r: r.last_heard):
            self._drop(record.node)

    def _drop(self, node: int) -> None:
        record = self._nodes.pop(node)
        self._index(record, None)
        self._dirty.discard(node)
        self._gone.add(node)

    def _index(self, old: NodeRecord | None, new: NodeRecord | None) -> None:
        """Keep the name index (short and long names, folded) in step with a node's names."""
        for record, add in ((old, False), (new, True)):
            if record is None or record.user is None:
                continue
            for name in {_fold(record.user.short_name), _fold(record.user.long_name)} - {""}:
                nodes = self._by_name.setdefault(name, set())
                (nodes.add if add else nodes.discard)(record.node)
                if not nodes:
                    del self._by_name[name]

    def forget_stale(self) -> int:
        """Forget nodes unheard for `ttl_days` (never the bot's own); returns how many."""
        cutoff = self._wall() - self.cfg.ttl_days * DAY_S
        with self._lock:
            stale = [n for n, r in self._nodes.items() if n != self._own and r.last_heard < cutoff]
            for node in stale:
                self._drop(node)
        return len(stale)

    # -- read (NodeDirectory) ---------------------------------------------------------------------
    def now(self) -> float:
        """Wall-clock epoch seconds."""
        return self._wall()

    def record(self, node: int) -> NodeRecord | None:
        """One node's record, or None."""
        with self._lock:
            return self._nodes.get(node)

    def records(self) -> list[NodeRecord]:
        """Every record, the most recently heard first."""
        with self._lock:
            nodes = list(self._nodes.values())
        return sorted(nodes, key=lambda r: r.last_heard, reverse=True)

    def own(self) -> NodeRecord | None:
        """The bot's own node."""
        with self._lock:
            return self._nodes.get(self._own) if self._own is not None else None

    def find(self, name: str) -> NodeRecord | None:
        """A node by short name, long name or `!id` (the most recently heard of several of that name)."""
        wanted = _fold(name)
        with self._lock:
            if wanted.startswith("!"):
                return find(list(self._nodes.values()), wanted)
            found = [self._nodes[n] for n in self._by_name.get(wanted, ())]
        return max(found, key=lambda r: r.last_heard) if found else None

    def named(self, text: str) -> list[NodeRecord]:
        """The known nodes a text names: a short name or `!id` as a word, a long name anywhere in it."""
        words = bare_words(text)
        folded = _fold(text)
        with self._lock:
            nodes = {n for w in words for n in self._by_name.get(w, ())}
            nodes.update(n for name, ns in self._by_name.items() if " " in name and name in folded for n in ns)
            nodes.update(num for w in words if (num := parse_label(w)) is not None and num in self._nodes)
            return [self._nodes[n] for n in nodes]

    def short_name_of(self, node: int) -> str | None:
        """The node's short name (raw, untrusted), from its NodeInfo, else from the radio's own node DB."""
        record = self.record(node)
        if record is not None and record.user is not None and record.user.short_name:
            return record.user.short_name
        return self._fallback_names(node) if self._fallback_names is not None else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._nodes)

    # -- persistence --------------------------------------------------------------------------------
    def flush(self) -> int:
        """Write changed records to the store (a shared one: after reading the other workers'); returns how many."""
        if self._table is None:
            return 0
        if getattr(self._table, "shared", False):
            # Several workers write one hash: take in what the others saved first, so that our write of a node
            # carries their facts too instead of replacing them (and we learn what they heard).
            self.absorb(self._table.load())
        with self._lock:
            dirty = [self._nodes[n] for n in self._dirty if n in self._nodes]
            gone = list(self._gone)
            self._dirty.clear()
            self._gone.clear()
        if dirty or gone:
            try:
                self._table.save(dirty, gone)
            except Exception:  # a full disk must not stop the directory; the changes are written next time
                with self._lock:
                    self._dirty.update(r.node for r in dirty if r.node in self._nodes)
                    self._gone.update(gone)
                raise
        return len(dirty)

    def absorb(self, records: list[NodeRecord]) -> int:
        """Merge records other workers saved (newer facts win); returns how many nodes were new here."""
        fresh = 0
        with self._lock:
            for other in records:
                if other.node == self._own or other.node in self._gone:
                    continue
                mine = self._nodes.get(other.node)
                fresh += mine is None
                report = NodeReport(
                    other.node,
                    other.heard,
                    other.user,
                    other.position,
                    other.device,
                    other.environment,
                    other.neighbors or None,
                )
                merged = (mine or NodeRecord(other.node)).merge(report)
                self._nodes[other.node] = merged
                if mine is None or merged.user != mine.user:
                    self._index(mine, merged)
            if len(self._nodes) > self.cfg.max_nodes:
                self._evict()
        return fresh

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S):
            try:
                self.forget_stale()
                self.flush()
            except Exception:
                log.exception("node directory not saved", extra={"event": Event.DIRECTORY_ERROR})

    # -- Companion: runs beside the daemon ------------------------------------------------------------
    def start(self, daemon: Daemon | None = None) -> None:
        """Start the thread that saves the directory."""
        if self._thread is None and self._table is not None:
            self._thread = threading.Thread(target=self._run, name="meshbot-directory", daemon=True)
            self._thread.start()
        log.info(
            "node directory: %d node(s) known", len(self), extra={"event": Event.DIRECTORY_LOADED, "nodes": len(self)}
        )

    def quiesce(self, daemon: Daemon | None = None) -> None:
        """Nothing to refuse."""

    def stop(self, daemon: Daemon | None = None) -> None:
        """Save what changed, before the store closes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        try:
            self.flush()
        except Exception:
            log.exception("node directory not saved at stop", extra={"event": Event.DIRECTORY_ERROR})


def _fold(name: str) -> str:
    return " ".join(name.split()).casefold()
