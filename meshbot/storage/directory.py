"""The node directory in the store: one row per node, its record as JSON, so what the bot knows survives a restart."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from meshbot.core.directory import (
    DeviceMetrics,
    EnvironmentMetrics,
    Heard,
    Neighbor,
    NodeRecord,
    NodeUser,
    Position,
)

if TYPE_CHECKING:
    from meshbot.storage.store import Store

log = logging.getLogger(__name__)

SAVE_BATCH = 250  # rows per transaction: a full save of 2,000 nodes never holds the store for long

# The store's migration that adds this module's table (see schema._MIGRATIONS).
SCHEMA = (
    """CREATE TABLE mesh_nodes (node INTEGER PRIMARY KEY, last_heard REAL NOT NULL, is_self INTEGER NOT NULL,
        record TEXT NOT NULL)""",
    "CREATE INDEX mesh_nodes_by_heard ON mesh_nodes (last_heard)",
)


def record_json(record: NodeRecord) -> str:
    """A record as stored."""
    return json.dumps(asdict(record), separators=(",", ":"), ensure_ascii=False)


def _part(kind: type, data: Any) -> Any:
    return kind(**data) if isinstance(data, dict) else None


def record_of(text: str) -> NodeRecord:
    """The record `record_json` wrote."""
    data = json.loads(text)
    return NodeRecord(
        node=int(data["node"]),
        user=_part(NodeUser, data.get("user")),
        heard=_part(Heard, data.get("heard")),
        position=_part(Position, data.get("position")),
        device=_part(DeviceMetrics, data.get("device")),
        environment=_part(EnvironmentMetrics, data.get("environment")),
        neighbors=tuple(Neighbor(**n) for n in data.get("neighbors") or ()),
        is_self=bool(data.get("is_self")),
    )


class DirectoryTable:
    """Reads and writes the `mesh_nodes` table through the store's connection."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def load(self) -> list[NodeRecord]:
        """Every stored record; a row that no longer parses is skipped with one log line."""
        with self._store._tx() as conn:
            rows = conn.execute("SELECT node, record FROM mesh_nodes").fetchall()
        records = []
        for node, text in rows:
            try:
                records.append(record_of(text))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("stored record of node %d unreadable, dropped: %s", node, exc)
        return records

    def save(self, records: list[NodeRecord], gone: list[int]) -> None:
        """Write `records` and delete `gone`, a few hundred per transaction (the intake shares the store's lock)."""
        rows = [(r.node, r.last_heard, int(r.is_self), record_json(r)) for r in records]
        for start in range(0, max(len(rows), 1), SAVE_BATCH):
            with self._store._tx() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO mesh_nodes (node, last_heard, is_self, record) VALUES (?, ?, ?, ?)",
                    rows[start : start + SAVE_BATCH],
                )
                if start == 0:
                    conn.executemany("DELETE FROM mesh_nodes WHERE node = ?", [(n,) for n in gone])
