"""The console's one-minute history in the store, so its page shows the last day again after a restart."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshbot.storage.store import Store

# The store's migration that adds this module's table (see schema._MIGRATIONS).
SCHEMA = (
    # One row per closed minute: `minute` is its start in epoch minutes, `sample` its figures as JSON.
    "CREATE TABLE console_minutes (minute INTEGER PRIMARY KEY, sample TEXT NOT NULL)",
)


class ConsoleTable:
    """Closed minutes of the console's history, kept for `keep_minutes`."""

    def __init__(self, store: Store, keep_minutes: int) -> None:
        self._store = store
        self._keep = keep_minutes

    def save(self, minute: int, sample: dict[str, Any]) -> None:
        """Write one closed minute (again, if it was written before) and forget minutes past the window."""
        with self._store._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO console_minutes (minute, sample) VALUES (?, ?)",
                (minute, json.dumps(sample, separators=(",", ":"))),
            )
            conn.execute("DELETE FROM console_minutes WHERE minute < ?", (minute - self._keep,))

    def load(self, since_minute: int) -> list[tuple[int, dict[str, Any]]]:
        """Minutes from `since_minute` on, oldest first; a row that does not parse is skipped."""
        with self._store._lock:
            rows = self._store._conn.execute(
                "SELECT minute, sample FROM console_minutes WHERE minute >= ? ORDER BY minute", (since_minute,)
            ).fetchall()
        out: list[tuple[int, dict[str, Any]]] = []
        for minute, text in rows:
            try:
                sample = json.loads(text)
            except ValueError:
                continue
            if isinstance(sample, dict):
                out.append((int(minute), sample))
        return out
