"""Durable state in SQLite: seen packets, queries with their fragments, "more" remainders, health events.

The bot runs unattended; after `kill -9` or a power cut it resumes from here. Every write is its own
committed transaction, so whatever a method returned has reached the database file.

Concurrency: one connection shared by the intake, worker and sender threads, guarded by a lock.
SQLite admits one writer at a time anyway, so connections per thread would only swap this short
lock wait for busy-timeout retries and "database is locked" errors; and `":memory:"` (tests) is a
separate database per connection, so it needs exactly one. Writes are a few small rows a minute.

Layout: schema.py holds the tables and their migrations, records.py the states and rows handed out,
health.py the `meshbot status` queries and pruning; this module is the `Store` that ties them together.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from meshbot.core.domain import Inbound
from meshbot.core.policy import Accept
from meshbot.storage import health, memory
from meshbot.storage.health import DAY_S, HOUR_S
from meshbot.storage.records import (
    INSERT_COLS,
    QUERY_COLS,
    TERMINAL,
    TERMINAL_EVENT,
    UNFINISHED,
    FragmentState,
    QueryState,
    StoredFragment,
    StoredQuery,
    StoreError,
    StoreMissing,
    placeholders,
    to_query,
)
from meshbot.storage.schema import SCHEMA_VERSION, configure, migrate

# The store's public names stay importable from here, where every caller has always found them.
__all__ = [
    "DAY_S",
    "HOUR_S",
    "SCHEMA_VERSION",
    "TERMINAL",
    "UNFINISHED",
    "FragmentState",
    "QueryState",
    "Store",
    "StoreError",
    "StoreMissing",
    "StoredFragment",
    "StoredQuery",
]

log = logging.getLogger(__name__)


class RemainderStore(Protocol):
    """Where "more" remainders are kept when several workers share them (meshbot.cluster.shared)."""

    def put_remainder(self, node: int, text: str, next_index: int) -> None: ...
    def take_remainder(self, node: int, max_age_s: float) -> tuple[str, int] | None: ...


def _text_digest(text: str) -> str:
    # "What is LoRa?" and "what is  lora?" are the same question typed twice.
    folded = " ".join(text.casefold().split())
    return hashlib.blake2b(folded.encode("utf-8"), digest_size=16).hexdigest()


class Store:
    """meshbot's durable state; safe to call from several threads."""

    def __init__(self, path: str | Path, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._lock = threading.RLock()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: no implicit transactions; `_tx` opens and commits each one itself.
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            configure(self._conn)
            migrate(self._conn, self.path, self._tx)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open the state database: {exc}") from exc
        self._closed = False
        # Several workers: "more" remainders live in the shared store, so any worker can answer a "more".
        self.shared_remainders: RemainderStore | None = None
        log.info("state database %s ready (schema v%d)", self.path, SCHEMA_VERSION)

    @classmethod
    def open_read_only(cls, path: str | Path, wall: Callable[[], float] = time.time) -> Store:
        """An existing store, read-only (sqlite `mode=ro`): never creates, migrates or writes it (`meshbot status`)."""
        file = Path(path).expanduser().resolve()
        if not file.is_file():
            raise StoreMissing(f"no state database at {file}")
        store = cls.__new__(cls)
        store._wall, store._lock, store.path, store._closed = wall, threading.RLock(), str(file), False
        try:
            uri = f"{file.as_uri()}?mode=ro"
            store._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            store._conn.execute("PRAGMA busy_timeout=5000")
            version = store._conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{file}: cannot read the state database: {exc}") from exc
        if version != SCHEMA_VERSION:
            store.close()
            why = "a newer meshbot's" if version > SCHEMA_VERSION else "older; `meshbot run` migrates it"
            raise StoreError(f"{file}: schema v{version} ({why}), this meshbot reads v{SCHEMA_VERSION}")
        return store

    def close(self) -> None:
        """Close the database; further calls fail. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a read-then-write cannot be raced by another process.
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (disk full): never leave the shared connection mid-transaction.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    # -- exactly-once intake -------------------------------------------------------------------

    def mark_seen(self, sender: int, packet_id: int) -> bool:
        """Remember (sender, packet id); True the first time ever, False for a re-delivery."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO seen (sender, packet_id, at) VALUES (?, ?, ?)", (sender, packet_id, self._wall())
            )
            return cur.rowcount == 1

    def recent_text_seen(self, sender: int, text: str, window_s: float) -> bool:
        """True when `sender` sent this text (case and spacing aside) within `window_s`; else records it."""
        # A repeat inside the window does not restart it: asking again after it has passed is answered.
        digest, now = _text_digest(text), self._wall()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT at FROM recent_texts WHERE sender = ? AND digest = ?", (sender, digest)
            ).fetchone()
            if row is not None and row[0] >= now - window_s:
                return True
            conn.execute(
                "INSERT OR REPLACE INTO recent_texts (sender, digest, at) VALUES (?, ?, ?)", (sender, digest, now)
            )
            return False

    # -- query lifecycle -----------------------------------------------------------------------

    def add_query(self, inbound: Inbound, decision: Accept, seed: int, state: QueryState = QueryState.QUEUED) -> int:
        """Persist an accepted query as QUEUED (or a waiting part as JOINING) and return its id."""
        now = self._wall()
        with self._tx() as conn:
            cur = conn.execute(
                f"INSERT INTO queries ({INSERT_COLS}, updated_at) " "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (
                    inbound.sender,
                    inbound.packet_id,
                    decision.question,
                    decision.kind.value,
                    decision.reply_to,
                    decision.reply_channel,
                    int(decision.want_ack),
                    # 2: a PKI-proven DM, so that a resumed question keeps its owner's conversation
                    int(inbound.is_dm) + int(inbound.is_dm and inbound.pki),
                    now,
                    state.value,
                    seed,
                    now,
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def set_state(self, query_id: int, state: QueryState, reason: str = "") -> None:
        """Move a query to `state`; entering DONE/FAILED/DROPPED records its health event once."""
        with self._tx() as conn:
            self._set_state(conn, query_id, state, reason)

    def _set_state(self, conn: sqlite3.Connection, query_id: int, state: QueryState, reason: str) -> None:
        now = self._wall()
        row = conn.execute("SELECT state FROM queries WHERE query_id = ?", (query_id,)).fetchone()
        if row is None:
            raise KeyError(f"no query {query_id}")
        conn.execute(
            "UPDATE queries SET state = ?, reason = ?, updated_at = ? WHERE query_id = ?",
            (state.value, reason, now, query_id),
        )
        # Only a change of state counts, so a repeated set_state(DONE) never counts an answer twice.
        if state in TERMINAL_EVENT and row[0] != state.value:
            conn.execute("INSERT INTO events (kind, value, at) VALUES (?, 0, ?)", (TERMINAL_EVENT[state], now))

    def add_fragment(self, query_id: int, index: int, text: str) -> None:
        """Store fragment `index` as PENDING (regenerated text replaces only a still-PENDING one)."""
        # After a restart the model writes the answer again; what already went on air must stay as sent.
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO fragments (query_id, idx, text, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (query_id, idx) DO UPDATE SET text = excluded.text WHERE fragments.state = ?",
                (query_id, index, text, FragmentState.PENDING.value, FragmentState.PENDING.value),
            )
            self._touch(conn, query_id)

    def generation_finished(self, query_id: int) -> None:
        """Record that the model has written every fragment of this query."""
        with self._tx() as conn:
            self._touch(conn, query_id, "generation_done = 1, ")

    def fragment_sent(self, query_id: int, index: int, packet_id: int) -> None:
        """Fragment went on air as `packet_id`: SENT, one more attempt."""
        self._update_fragment(
            query_id, index, "state = ?, packet_id = ?, attempts = attempts + 1", (FragmentState.SENT.value, packet_id)
        )

    def fragment_done(self, query_id: int, index: int, state: FragmentState) -> None:
        """Fragment ended ACKED or FAILED."""
        if state not in (FragmentState.ACKED, FragmentState.FAILED):
            raise ValueError(f"fragment_done takes ACKED or FAILED, not {state.name}")
        self._update_fragment(query_id, index, "state = ?", (state.value,))

    def _update_fragment(self, query_id: int, index: int, assignments: str, values: tuple[Any, ...]) -> None:
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE fragments SET {assignments} WHERE query_id = ? AND idx = ?", (*values, query_id, index)
            )
            if cur.rowcount == 0:
                raise KeyError(f"no fragment {index} of query {query_id}")
            self._touch(conn, query_id)

    def _touch(self, conn: sqlite3.Connection, query_id: int, extra: str = "") -> None:
        cur = conn.execute(f"UPDATE queries SET {extra}updated_at = ? WHERE query_id = ?", (self._wall(), query_id))
        if cur.rowcount == 0:
            raise KeyError(f"no query {query_id}")

    def join_parts(self, part_ids: tuple[int, ...], question: str) -> None:
        """End a join in one transaction: the last part becomes QUEUED with the joined question, the rest JOINED."""
        *earlier, last = part_ids
        with self._tx() as conn:
            for query_id in earlier:
                self._set_state(conn, query_id, QueryState.JOINED, f"joined into q{last}")
            conn.execute("UPDATE queries SET question = ? WHERE query_id = ?", (question, last))
            self._set_state(conn, last, QueryState.QUEUED, "")

    def joining(self) -> list[StoredQuery]:
        """Parts of multi-part questions still waiting for the rest, oldest first."""
        return self._load("state = ?", (QueryState.JOINING.value,))

    def get(self, query_id: int) -> StoredQuery | None:
        """One query with its fragments, or None."""
        found = self._load("query_id = ?", (query_id,))
        return found[0] if found else None

    def unfinished(self) -> list[StoredQuery]:
        """Queries still QUEUED, GENERATING or SENDING, oldest first, with their fragments."""
        marks, values = placeholders(UNFINISHED)
        return self._load(f"state IN ({marks})", tuple(values))

    def expire(self, max_age_s: float) -> list[StoredQuery]:
        """Drop unfinished queries accepted more than `max_age_s` ago; return them as DROPPED."""
        marks, values = placeholders(UNFINISHED)
        cutoff = self._wall() - max_age_s
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT query_id FROM queries WHERE state IN ({marks}) AND accepted_at < ?", (*values, cutoff)
            ).fetchall()
            ids = tuple(r[0] for r in rows)
            for query_id in ids:
                self._set_state(conn, query_id, QueryState.DROPPED, "expired")
            dropped = self._load(f"query_id IN ({','.join('?' * len(ids))})", ids) if ids else []
        if ids:
            log.info("dropped %d queries older than %.0f s", len(ids), max_age_s)
        return dropped

    def _load(self, where: str, params: tuple[Any, ...]) -> list[StoredQuery]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {QUERY_COLS} FROM queries WHERE {where} " "ORDER BY accepted_at, query_id", params
            ).fetchall()
            frags = self._conn.execute(
                "SELECT query_id, idx, text, state, packet_id, attempts FROM fragments "
                f"WHERE query_id IN (SELECT query_id FROM queries WHERE {where}) ORDER BY query_id, idx",
                params,
            ).fetchall()
        by_query: dict[int, list[StoredFragment]] = {}
        for qid, idx, text, state, packet_id, attempts in frags:
            by_query.setdefault(qid, []).append(StoredFragment(idx, text, FragmentState(state), packet_id, attempts))
        return [to_query(row, tuple(by_query.get(row[0], ()))) for row in rows]

    # -- "more" remainders ---------------------------------------------------------------------

    def put_remainder(self, node: int, text: str, next_index: int) -> None:
        """Keep what did not fit for `node`'s next "more" (replaces any older one)."""
        if self.shared_remainders is not None:
            self.shared_remainders.put_remainder(node, text, next_index)
            return
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO remainders (node, text, next_index, at) VALUES (?, ?, ?, ?)",
                (node, text, next_index, self._wall()),
            )

    def take_remainder(self, node: int, max_age_s: float) -> tuple[str, int] | None:
        """Remove and return (text, next_index) for `node`, or None if absent or older than `max_age_s`."""
        if self.shared_remainders is not None:
            return self.shared_remainders.take_remainder(node, max_age_s)
        now = self._wall()
        with self._tx() as conn:
            row = conn.execute("SELECT text, next_index, at FROM remainders WHERE node = ?", (node,)).fetchone()
            conn.execute("DELETE FROM remainders WHERE node = ?", (node,))
        if row is None or row[2] < now - max_age_s:
            return None
        return row[0], row[1]

    def expire_remainders(self, max_age_s: float) -> int:
        """Delete local remainders older than `max_age_s` (no "more" would take them); rows deleted."""
        with self._tx() as conn:
            return int(conn.execute("DELETE FROM remainders WHERE at < ?", (self._wall() - max_age_s,)).rowcount)

    def remainder_count(self) -> int:
        """Local remainders kept (one per node at most)."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM remainders").fetchone()[0])

    # -- health --------------------------------------------------------------------------------

    def record_event(self, kind: str, value: float = 0.0) -> None:
        """Record a health event: "radio-up", "radio-down", "ttff" (s), "airtime" (s), or your own kind."""
        # "answered", "failed" and "dropped" come from set_state/expire; recording them here counts twice.
        with self._tx() as conn:
            conn.execute("INSERT INTO events (kind, value, at) VALUES (?, ?, ?)", (kind, value, self._wall()))

    def last_event(self, *kinds: str) -> tuple[str, float] | None:
        """The newest event of one of `kinds`, as (kind, at), or None."""
        marks = ", ".join("?" * len(kinds))
        with self._lock:
            row = self._conn.execute(
                f"SELECT kind, at FROM events WHERE kind IN ({marks}) ORDER BY at DESC, id DESC LIMIT 1", kinds
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def heartbeat(self, pid: int, queue_depth: int, paused: bool) -> None:
        """Say that daemon `pid` on this host is alive now."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO heartbeats (pid, host, beat_at, queue_depth, paused, stopped) "
                "VALUES (?, ?, ?, ?, ?, 0)",
                (pid, socket.gethostname(), self._wall(), queue_depth, int(paused)),
            )

    def stopped(self, pid: int) -> None:
        """Say that daemon `pid` stopped cleanly."""
        with self._tx() as conn:
            conn.execute("UPDATE heartbeats SET stopped = 1, beat_at = ? WHERE pid = ?", (self._wall(), pid))

    def last_heartbeat(self) -> dict[str, Any] | None:
        """The newest heartbeat: pid, host, beat_at, queue_depth, paused, stopped; None if no daemon ever ran."""
        with self._lock:
            return health.last_heartbeat(self._conn)

    def status(self, now: float | None = None) -> dict[str, Any]:
        """Figures for `meshbot status`; every time is wall-clock epoch seconds."""
        now = self._wall() if now is None else now
        with self._lock:
            return health.status(self._conn, now)

    def prune(self, keep_days: float = 7.0) -> int:
        """Delete finished queries, seen packets, texts, remainders and events older than `keep_days`; idle memory."""
        now = self._wall()
        with self._tx() as conn:
            deleted = health.prune(conn, now - keep_days * DAY_S)
            for sql, params in memory.prune_statements(now, [s.value for s in UNFINISHED]):
                deleted += conn.execute(sql, params).rowcount
        log.debug("pruned %d rows older than %.1f days", deleted, keep_days)
        return deleted
