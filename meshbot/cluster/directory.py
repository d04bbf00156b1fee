"""The node directory shared by the workers of one bot: one Redis hash of node records.

With several workers each gets a share of the uplinks, so each hears part of the mesh. Every worker writes
what it learnt to the hash (when its directory saves, every 30 s) and reads the others' back at the same
time (`MeshDirectory.absorb`), so `!nodes` or a mesh question gives the same facts whichever worker answers.
"""

from __future__ import annotations

import logging

import redis

from meshbot.cluster.shared import Shared
from meshbot.core.directory import NodeRecord
from meshbot.core.events import Event
from meshbot.storage.directory import record_json, record_of

log = logging.getLogger(__name__)


class SharedDirectoryTable:
    """A `DirectoryTable` in the shared store; `shared` tells the directory to read the others' records back."""

    shared = True

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._key = shared.key("nodes")

    def load(self) -> list[NodeRecord]:
        """Every record any worker saved; [] (and one log line) while the shared store is away."""
        try:
            rows = self._shared.r.hgetall(self._key)
        except redis.RedisError as exc:
            log.warning("shared node directory not read: %s", exc, extra={"event": Event.DIRECTORY_ERROR})
            return []
        records = []
        for node, text in rows.items():
            try:
                records.append(record_of(text.decode() if isinstance(text, bytes) else text))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("shared record of node %s unreadable: %s", node, exc)
        return records

    def save(self, records: list[NodeRecord], gone: list[int]) -> None:
        """Write `records` and delete `gone` (raises redis errors: the directory keeps them for the next save)."""
        pipe = self._shared.r.pipeline(transaction=False)
        if records:
            pipe.hset(self._key, mapping={str(r.node): record_json(r) for r in records})
        if gone:
            pipe.hdel(self._key, *(str(n) for n in gone))
        pipe.execute()
