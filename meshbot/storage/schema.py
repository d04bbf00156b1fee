"""The state database's schema: one migration per version, and the runner that applies them on open.

To add a table or column, append a new version to `_MIGRATIONS` (and it raises `SCHEMA_VERSION`);
never edit a shipped one: databases in the field are already past it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from meshbot.storage import console, directory, keys, memory
from meshbot.storage.records import StoreError

log = logging.getLogger(__name__)

_SCHEMA_V1 = (
    """CREATE TABLE queries (
        query_id INTEGER PRIMARY KEY AUTOINCREMENT,
        sender INTEGER NOT NULL, packet_id INTEGER NOT NULL, question TEXT NOT NULL, kind TEXT NOT NULL,
        reply_to INTEGER NOT NULL, reply_channel INTEGER NOT NULL, want_ack INTEGER NOT NULL,
        is_dm INTEGER NOT NULL, accepted_at REAL NOT NULL, state TEXT NOT NULL, seed INTEGER NOT NULL,
        generation_done INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL)""",
    "CREATE INDEX queries_by_state ON queries (state, accepted_at)",
    """CREATE TABLE fragments (
        query_id INTEGER NOT NULL REFERENCES queries (query_id), idx INTEGER NOT NULL, text TEXT NOT NULL,
        state TEXT NOT NULL, packet_id INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (query_id, idx)) WITHOUT ROWID""",
    """CREATE TABLE seen (sender INTEGER NOT NULL, packet_id INTEGER NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (sender, packet_id)) WITHOUT ROWID""",
    "CREATE INDEX seen_by_age ON seen (at)",
    """CREATE TABLE recent_texts (sender INTEGER NOT NULL, digest TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (sender, digest)) WITHOUT ROWID""",
    """CREATE TABLE remainders (node INTEGER PRIMARY KEY, text TEXT NOT NULL, next_index INTEGER NOT NULL,
        at REAL NOT NULL)""",
    "CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, value REAL NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX events_by_kind ON events (kind, at)",
    "CREATE INDEX events_by_age ON events (at)",
)
_SCHEMA_V2 = (
    # One row per daemon process that uses this store: `meshbot status` tells running from stopped by it.
    """CREATE TABLE heartbeats (pid INTEGER PRIMARY KEY, host TEXT NOT NULL, beat_at REAL NOT NULL,
        queue_depth INTEGER NOT NULL, paused INTEGER NOT NULL, stopped INTEGER NOT NULL DEFAULT 0)""",
)
# Migration n takes the database from user_version n-1 to n. Append; never edit a shipped one.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: _SCHEMA_V1,
    2: _SCHEMA_V2,
    3: keys.SCHEMA_V3,
    4: memory.SCHEMA,
    5: (),  # placeholder: another branch's migration
    6: directory.SCHEMA,  # the node directory
    7: console.SCHEMA,  # the console's minutes
}
SCHEMA_VERSION = max(_MIGRATIONS)


def configure(conn: sqlite3.Connection) -> None:
    """Set the connection's journal, durability and lock-wait pragmas."""
    # WAL: a commit is one append to the log, readers (`meshbot status` in another process) never
    # block the writer, and a kill -9 mid-write leaves the database consistent.
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL with WAL fsyncs at checkpoints, not every commit: a committed row survives a crash of
    # the process (the OS has it), and a power cut can lose at most the last few commits but never
    # corrupts the file. FULL would fsync each fragment's state on a Pi's SD card for little gain.
    conn.execute("PRAGMA synchronous=NORMAL")
    # Another process holding the write lock (a status reader checkpointing) waits, not errors.
    conn.execute("PRAGMA busy_timeout=5000")


def migrate(conn: sqlite3.Connection, path: str, tx: Callable[[], AbstractContextManager[sqlite3.Connection]]) -> None:
    """Bring the database up to SCHEMA_VERSION, one committed transaction (from `tx`) per version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema v{version} is from a newer meshbot (this one knows "
            f"v{SCHEMA_VERSION}); upgrade meshbot or move the file away"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        with tx() as txconn:
            for statement in _MIGRATIONS[target]:
                txconn.execute(statement)
            txconn.execute(f"PRAGMA user_version={target}")
        log.info("state database %s migrated to schema v%d", path, target)
