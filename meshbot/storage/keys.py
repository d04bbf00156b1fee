"""The `mqtt` transport's identity and learnt public keys, in the store's database (schema v3).

The bot's own X25519 key and node number are made once and kept, so that handsets that learnt them keep
reaching the bot across restarts. Askers' public keys are kept so that a restart still decrypts their DMs;
the table is bounded (least recently heard go first) and rows expire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshbot.storage.store import Store

# Migration 3 (appended to schema._MIGRATIONS; never edit a shipped one).
SCHEMA_V3 = (
    """CREATE TABLE own_identity (slot INTEGER PRIMARY KEY CHECK (slot = 1), node INTEGER NOT NULL,
        private_key BLOB NOT NULL, created_at REAL NOT NULL)""",
    """CREATE TABLE node_keys (node INTEGER PRIMARY KEY, public_key BLOB NOT NULL, heard_at REAL NOT NULL)""",
    "CREATE INDEX node_keys_by_age ON node_keys (heard_at)",
)


class KeyStore:
    """Reads and writes the identity and key tables through the Store's transactions."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def identity(self) -> tuple[int, bytes] | None:
        """The node number and private key made on an earlier start, if any."""
        with self._store._tx() as conn:
            row = conn.execute("SELECT node, private_key FROM own_identity WHERE slot = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def keep_identity(self, node: int, private_key: bytes, now: float) -> tuple[int, bytes]:
        """Keep this identity unless one exists already; returns the one that is kept."""
        with self._store._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO own_identity (slot, node, private_key, created_at) VALUES (1, ?, ?, ?)",
                (node, private_key, now),
            )
            row = conn.execute("SELECT node, private_key FROM own_identity WHERE slot = 1").fetchone()
        return int(row[0]), bytes(row[1])

    def pin(self, node: int, public_key: bytes, now: float, max_rows: int, max_age_s: float) -> bytes:
        """Pin `node`'s key unless another is pinned (trust on first use); returns the pinned key.

        The same key again refreshes when it was heard; a pin not heard within `max_age_s` is gone, as is the
        least recently heard past `max_rows`.
        """
        with self._store._tx() as conn:
            conn.execute("DELETE FROM node_keys WHERE node = ? AND heard_at < ?", (node, now - max_age_s))
            conn.execute(
                "INSERT INTO node_keys (node, public_key, heard_at) VALUES (?, ?, ?) "
                "ON CONFLICT (node) DO UPDATE SET heard_at = excluded.heard_at "
                "WHERE node_keys.public_key = excluded.public_key",
                (node, public_key, now),
            )
            kept = bytes(conn.execute("SELECT public_key FROM node_keys WHERE node = ?", (node,)).fetchone()[0])
            conn.execute(
                "DELETE FROM node_keys WHERE node IN (SELECT node FROM node_keys ORDER BY heard_at DESC "
                "LIMIT -1 OFFSET ?)",
                (max_rows,),
            )
        return kept

    def forget(self, node: int) -> bool:
        """Unpin `node`'s key; True when one was pinned."""
        with self._store._tx() as conn:
            return conn.execute("DELETE FROM node_keys WHERE node = ?", (node,)).rowcount > 0

    def recent(self, now: float, max_age_s: float, limit: int) -> list[tuple[int, bytes, float]]:
        """Keys heard within `max_age_s`, most recent first; older rows are deleted."""
        with self._store._tx() as conn:
            conn.execute("DELETE FROM node_keys WHERE heard_at < ?", (now - max_age_s,))
            rows = conn.execute(
                "SELECT node, public_key, heard_at FROM node_keys ORDER BY heard_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [(int(n), bytes(k), float(at)) for n, k, at in rows]

    def lookup(self, node: int) -> tuple[bytes, float] | None:
        """`node`'s stored key and when it was heard, if any."""
        with self._store._tx() as conn:
            row = conn.execute("SELECT public_key, heard_at FROM node_keys WHERE node = ?", (node,)).fetchone()
        return None if row is None else (bytes(row[0]), float(row[1]))

    def pins(self, limit: int) -> list[tuple[int, bytes, float]]:
        """Pinned keys, most recently heard first (read only: `meshbot keys list`)."""
        with self._store._tx() as conn:
            rows = conn.execute(
                "SELECT node, public_key, heard_at FROM node_keys ORDER BY heard_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [(int(n), bytes(k), float(at)) for n, k, at in rows]

    def count(self) -> int:
        """Keys stored."""
        with self._store._tx() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM node_keys").fetchone()[0])
