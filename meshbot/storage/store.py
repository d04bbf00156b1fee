"""Durable state in SQLite: seen packets, queries with their fragments, "more" remainders, health events.

The bot runs unattended; after `kill -9` or a power cut it resumes from here. Every write is its own
committed transaction, so whatever a method returned has reached the database file.

Concurrency: one connection shared by the intake, worker and sender threads, guarded by a lock.
SQLite admits one writer at a time anyway, so connections per thread would only swap this short
lock wait for busy-timeout retries and "database is locked" errors; and `":memory:"` (tests) is a
separate database per connection, so it needs exactly one. Writes are a few small rows a minute.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshbot.core.domain import Inbound
from meshbot.core.policy import Accept
from meshbot.storage import memory

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
HOUR_S = 3600.0
DAY_S = 86400.0


class QueryState(enum.Enum):
    """Where a query is in its life."""

    QUEUED = "queued"
    GENERATING = "generating"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    DROPPED = "dropped"


class FragmentState(enum.Enum):
    """Where one fragment of a reply is on air."""

    PENDING = "pending"
    SENT = "sent"
    ACKED = "acked"
    FAILED = "failed"


UNFINISHED = (QueryState.QUEUED, QueryState.GENERATING, QueryState.SENDING)
TERMINAL = (QueryState.DONE, QueryState.FAILED, QueryState.DROPPED)
# Entering a terminal state records this health event, in the same transaction (see `set_state`).
_TERMINAL_EVENT = {QueryState.DONE: "answered", QueryState.FAILED: "failed", QueryState.DROPPED: "dropped"}
_OUTCOMES = tuple(_TERMINAL_EVENT.values())


class StoreError(Exception):
    """The database cannot be used (corrupt, or written by a newer meshbot)."""


@dataclass(frozen=True)
class StoredFragment:
    """One fragment of a reply as stored."""

    index: int
    text: str
    state: FragmentState
    packet_id: int | None
    attempts: int


@dataclass(frozen=True)
class StoredQuery:
    """One accepted query with its reply fragments so far."""

    query_id: int
    sender: int
    packet_id: int
    question: str
    kind: str  # "ask" | "more"
    reply_to: int
    reply_channel: int
    want_ack: bool
    is_dm: bool
    accepted_at: float  # wall-clock epoch seconds, so age survives reboots
    state: QueryState
    seed: int
    fragments: tuple[StoredFragment, ...]
    generation_done: bool

    @property
    def first_unacked(self) -> StoredFragment | None:
        """The fragment a resumed send starts from: the first one not ACKed."""
        return next((f for f in self.fragments if f.state is not FragmentState.ACKED), None)


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
# Migration n takes the database from user_version n-1 to n. Append; never edit a shipped one.
_SCHEMA_V2 = (
    # One row per daemon process that uses this store: `meshbot status` tells running from stopped by it.
    """CREATE TABLE heartbeats (pid INTEGER PRIMARY KEY, host TEXT NOT NULL, beat_at REAL NOT NULL,
        queue_depth INTEGER NOT NULL, paused INTEGER NOT NULL, stopped INTEGER NOT NULL DEFAULT 0)""",
)
# v3: conversation memory (storage/memory.py owns its tables and queries).
_MIGRATIONS: dict[int, tuple[str, ...]] = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: memory.SCHEMA}

_INSERT_COLS = (
    "sender, packet_id, question, kind, reply_to, reply_channel, want_ack, is_dm, "
    "accepted_at, state, seed, generation_done"
)
_QUERY_COLS = "query_id, " + _INSERT_COLS


def _text_digest(text: str) -> str:
    # "What is LoRa?" and "what is  lora?" are the same question typed twice.
    folded = " ".join(text.casefold().split())
    return hashlib.blake2b(folded.encode("utf-8"), digest_size=16).hexdigest()


def _placeholders(states: tuple[QueryState, ...]) -> tuple[str, list[str]]:
    return ",".join("?" * len(states)), [s.value for s in states]


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
            self._configure()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open the state database: {exc}") from exc
        self._closed = False
        log.info("state database %s ready (schema v%d)", self.path, SCHEMA_VERSION)

    def _configure(self) -> None:
        conn = self._conn
        # WAL: a commit is one append to the log, readers (`meshbot status` in another process) never
        # block the writer, and a kill -9 mid-write leaves the database consistent.
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL with WAL fsyncs at checkpoints, not every commit: a committed row survives a crash of
        # the process (the OS has it), and a power cut can lose at most the last few commits but never
        # corrupts the file. FULL would fsync each fragment's state on a Pi's SD card for little gain.
        conn.execute("PRAGMA synchronous=NORMAL")
        # Another process holding the write lock (a status reader checkpointing) waits, not errors.
        conn.execute("PRAGMA busy_timeout=5000")

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema v{version} is from a newer meshbot (this one knows "
                f"v{SCHEMA_VERSION}); upgrade meshbot or move the file away"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._tx() as conn:
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={target}")
            log.info("state database %s migrated to schema v%d", self.path, target)

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

    def add_query(self, inbound: Inbound, decision: Accept, seed: int) -> int:
        """Persist an accepted query as QUEUED and return its id."""
        now = self._wall()
        with self._tx() as conn:
            cur = conn.execute(
                f"INSERT INTO queries ({_INSERT_COLS}, updated_at) " "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (
                    inbound.sender,
                    inbound.packet_id,
                    decision.question,
                    decision.kind.value,
                    decision.reply_to,
                    decision.reply_channel,
                    int(decision.want_ack),
                    int(inbound.is_dm),
                    now,
                    QueryState.QUEUED.value,
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
        if state in _TERMINAL_EVENT and row[0] != state.value:
            conn.execute("INSERT INTO events (kind, value, at) VALUES (?, 0, ?)", (_TERMINAL_EVENT[state], now))

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

    def get(self, query_id: int) -> StoredQuery | None:
        """One query with its fragments, or None."""
        found = self._load("query_id = ?", (query_id,))
        return found[0] if found else None

    def unfinished(self) -> list[StoredQuery]:
        """Queries still QUEUED, GENERATING or SENDING, oldest first, with their fragments."""
        marks, values = _placeholders(UNFINISHED)
        return self._load(f"state IN ({marks})", tuple(values))

    def expire(self, max_age_s: float) -> list[StoredQuery]:
        """Drop unfinished queries accepted more than `max_age_s` ago; return them as DROPPED."""
        marks, values = _placeholders(UNFINISHED)
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
                f"SELECT {_QUERY_COLS} FROM queries WHERE {where} " "ORDER BY accepted_at, query_id", params
            ).fetchall()
            frags = self._conn.execute(
                "SELECT query_id, idx, text, state, packet_id, attempts FROM fragments "
                f"WHERE query_id IN (SELECT query_id FROM queries WHERE {where}) ORDER BY query_id, idx",
                params,
            ).fetchall()
        by_query: dict[int, list[StoredFragment]] = {}
        for qid, idx, text, state, packet_id, attempts in frags:
            by_query.setdefault(qid, []).append(StoredFragment(idx, text, FragmentState(state), packet_id, attempts))
        return [_to_query(row, tuple(by_query.get(row[0], ()))) for row in rows]

    # -- "more" remainders ---------------------------------------------------------------------

    def put_remainder(self, node: int, text: str, next_index: int) -> None:
        """Keep what did not fit for `node`'s next "more" (replaces any older one)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO remainders (node, text, next_index, at) VALUES (?, ?, ?, ?)",
                (node, text, next_index, self._wall()),
            )

    def take_remainder(self, node: int, max_age_s: float) -> tuple[str, int] | None:
        """Remove and return (text, next_index) for `node`, or None if absent or older than `max_age_s`."""
        now = self._wall()
        with self._tx() as conn:
            row = conn.execute("SELECT text, next_index, at FROM remainders WHERE node = ?", (node,)).fetchone()
            conn.execute("DELETE FROM remainders WHERE node = ?", (node,))
        if row is None or row[2] < now - max_age_s:
            return None
        return row[0], row[1]

    # -- health --------------------------------------------------------------------------------

    def record_event(self, kind: str, value: float = 0.0) -> None:
        """Record a health event: "radio-up", "radio-down", "ttff" (s), "airtime" (s), or your own kind."""
        # "answered", "failed" and "dropped" come from set_state/expire; recording them here counts twice.
        with self._tx() as conn:
            conn.execute("INSERT INTO events (kind, value, at) VALUES (?, ?, ?)", (kind, value, self._wall()))

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
            row = self._conn.execute(
                "SELECT pid, host, beat_at, queue_depth, paused, stopped FROM heartbeats ORDER BY beat_at DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        keys = ("pid", "host", "beat_at", "queue_depth", "paused", "stopped")
        return dict(zip(keys, row, strict=True))

    def status(self, now: float | None = None) -> dict[str, Any]:
        """Figures for `meshbot status`; every time is wall-clock epoch seconds."""
        now = self._wall() if now is None else now
        hour, day = now - HOUR_S, now - DAY_S
        marks, unfinished = _placeholders(UNFINISHED)
        with self._lock:
            conn = self._conn
            depth = dict(
                conn.execute(f"SELECT state, COUNT(*) FROM queries WHERE state IN ({marks}) GROUP BY state", unfinished)
            )
            counts = conn.execute(
                "SELECT kind, SUM(at >= ?), COUNT(*) FROM events WHERE kind IN (?, ?, ?) "
                "AND at >= ? AND at <= ? GROUP BY kind",
                (hour, *_OUTCOMES, day, now),
            ).fetchall()
            ttff, airtime = conn.execute(
                "SELECT AVG(CASE WHEN kind = 'ttff' THEN value END), "
                "TOTAL(CASE WHEN kind = 'airtime' THEN value END) FROM events "
                "WHERE kind IN ('ttff', 'airtime') AND at >= ? AND at <= ?",
                (hour, now),
            ).fetchone()
            radio = conn.execute(
                "SELECT kind, at FROM events WHERE kind IN ('radio-up', 'radio-down') "
                "AND at <= ? ORDER BY at DESC, id DESC LIMIT 1",
                (now,),
            ).fetchone()
            last = conn.execute("SELECT MAX(at) FROM events WHERE at <= ?", (now,)).fetchone()[0]
            oldest = conn.execute(
                f"SELECT MIN(accepted_at) FROM queries WHERE state IN ({marks})", unfinished
            ).fetchone()[0]
        per_kind = {kind: (int(in_hour), int(in_day)) for kind, in_hour, in_day in counts}
        return {
            "now": now,
            "queue_depth": depth.get(QueryState.QUEUED.value, 0),
            "in_progress": depth.get(QueryState.GENERATING.value, 0) + depth.get(QueryState.SENDING.value, 0),
            "oldest_unfinished_at": oldest,
            "last_hour": {k: per_kind.get(k, (0, 0))[0] for k in _OUTCOMES},
            "last_day": {k: per_kind.get(k, (0, 0))[1] for k in _OUTCOMES},
            "ttff_mean_last_hour_s": ttff,
            "airtime_last_hour_s": airtime,
            "radio_up_since": radio[1] if radio is not None and radio[0] == "radio-up" else None,
            "last_event_at": last,
        }

    def prune(self, keep_days: float = 7.0) -> int:
        """Delete finished queries, seen packets, texts, remainders and events older than `keep_days`; idle memory."""
        cutoff = self._wall() - keep_days * DAY_S
        marks, values = _placeholders(TERMINAL)
        old_done = f"SELECT query_id FROM queries WHERE state IN ({marks}) AND updated_at < ?"
        statements: tuple[tuple[str, tuple[Any, ...]], ...] = (
            (f"DELETE FROM fragments WHERE query_id IN ({old_done})", (*values, cutoff)),
            (f"DELETE FROM queries WHERE query_id IN ({old_done})", (*values, cutoff)),
            ("DELETE FROM seen WHERE at < ?", (cutoff,)),
            ("DELETE FROM recent_texts WHERE at < ?", (cutoff,)),
            ("DELETE FROM remainders WHERE at < ?", (cutoff,)),
            # Keep the latest radio-up/down so "connected since" survives a week of quiet uptime.
            (
                "DELETE FROM events WHERE at < ? AND id NOT IN (SELECT MAX(id) FROM events "
                "WHERE kind IN ('radio-up', 'radio-down') GROUP BY kind)",
                (cutoff,),
            ),
            *memory.prune_statements(self._wall(), [s.value for s in UNFINISHED]),
        )
        with self._tx() as conn:
            deleted = sum(conn.execute(sql, params).rowcount for sql, params in statements)
        log.debug("pruned %d rows older than %.1f days", deleted, keep_days)
        return deleted


def _to_query(row: tuple[Any, ...], fragments: tuple[StoredFragment, ...]) -> StoredQuery:
    (
        query_id,
        sender,
        packet_id,
        question,
        kind,
        reply_to,
        reply_channel,
        want_ack,
        is_dm,
        accepted_at,
        state,
        seed,
        generation_done,
    ) = row
    return StoredQuery(
        query_id,
        sender,
        packet_id,
        question,
        kind,
        reply_to,
        reply_channel,
        bool(want_ack),
        bool(is_dm),
        accepted_at,
        QueryState(state),
        seed,
        fragments,
        bool(generation_done),
    )
