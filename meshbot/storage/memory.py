"""Conversation memory in the store: each conversation's recent exchanges, and the history a question was asked with.

A conversation is (node, channel): a DM is keyed by the node alone (channel `DM`), a channel question by the
channel and the node, so one person's thread never reaches another's prompt. Rows are bounded: at most the
configured number of exchanges per conversation (older ones are deleted as new ones arrive), and a conversation
idle past its expiry is deleted by `Store.prune`. The history a question started with is kept with its query id
until it is answered, so a question resumed after a crash is answered with the same history.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshbot.storage.store import Store

DM = -1  # the channel column of a direct-message conversation (channels are 0..7)

# The store's migration that adds this module's tables (see store._MIGRATIONS).
SCHEMA = (
    """CREATE TABLE turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT, node INTEGER NOT NULL, channel INTEGER NOT NULL,
        query_id INTEGER UNIQUE, question TEXT NOT NULL, answer TEXT NOT NULL, tokens INTEGER NOT NULL,
        at REAL NOT NULL, expires_at REAL NOT NULL)""",
    "CREATE INDEX turns_by_conversation ON turns (node, channel, id)",
    "CREATE INDEX turns_by_expiry ON turns (expires_at)",
    # The history a started question was given, until its answer is remembered (JSON list of exchanges).
    """CREATE TABLE asked_with (query_id INTEGER PRIMARY KEY, node INTEGER NOT NULL, channel INTEGER NOT NULL,
        history TEXT NOT NULL, at REAL NOT NULL)""",
)


@dataclass(frozen=True)
class Exchange:
    """One question and the answer it got."""

    question: str
    answer: str
    tokens: int = 0  # prompt tokens the pair takes, as counted when it was stored
    at: float = 0.0  # wall-clock epoch seconds


@dataclass(frozen=True)
class Asked:
    """Which question: its id in this worker's store, and the packet that asked it (the same on every worker)."""

    query_id: int
    sender: int
    packet_id: int


@dataclass(frozen=True)
class Snapshot:
    """The conversation a question belongs to and the history it was asked with."""

    node: int
    channel: int
    history: tuple[Exchange, ...]


def channel_key(channel: int | None) -> int:
    """The stored channel of a conversation: `DM` for a direct message (None)."""
    return DM if channel is None else channel


def exchange_row(exchange: Exchange) -> list[str | int | float]:
    """An exchange as stored in JSON: [question, answer, tokens, at] (here and in the shared store)."""
    return [exchange.question, exchange.answer, exchange.tokens, exchange.at]


def exchange_of(row: Sequence[Any]) -> Exchange:
    """The exchange `exchange_row` wrote."""
    question, answer, tokens, at = row
    return Exchange(str(question), str(answer), int(tokens), float(at))


def prune_statements(now: float, unfinished: Sequence[str]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """SQL for `Store.prune`: idle conversations, and histories of questions that are no longer open."""
    marks = ",".join("?" * len(unfinished))
    return (
        ("DELETE FROM turns WHERE expires_at < ?", (now,)),
        (
            f"DELETE FROM asked_with WHERE query_id NOT IN (SELECT query_id FROM queries WHERE state IN ({marks}))",
            tuple(unfinished),
        ),
    )


class MemoryTable:
    """Reads and writes conversation memory through the store's connection, one transaction per call."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def now(self) -> float:
        """The store's wall clock (epoch seconds): memory ages survive restarts."""
        return self._store._wall()

    def recent(self, node: int, channel: int | None, limit: int) -> list[Exchange]:
        """The conversation's newest `limit` exchanges, oldest first."""
        if limit <= 0:
            return []
        with self._store._tx() as conn:
            rows = conn.execute(
                "SELECT question, answer, tokens, at FROM turns WHERE node = ? AND channel = ? "
                "ORDER BY id DESC LIMIT ?",
                (node, channel_key(channel), limit),
            ).fetchall()
        return [Exchange(*row) for row in reversed(rows)]

    def add(self, node: int, channel: int | None, asked: Asked, exchange: Exchange, keep: int, idle_s: float) -> None:
        """Remember an answered exchange (once per query), keep the newest `keep`, and restart the idle clock."""
        key, query_id = channel_key(channel), asked.query_id
        with self._store._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO turns (node, channel, query_id, question, answer, tokens, at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (node, key, query_id, exchange.question, exchange.answer, exchange.tokens, exchange.at, 0.0),
            )
            conn.execute(
                "DELETE FROM turns WHERE node = ? AND channel = ? AND id NOT IN "
                "(SELECT id FROM turns WHERE node = ? AND channel = ? ORDER BY id DESC LIMIT ?)",
                (node, key, node, key, keep),
            )
            # A conversation expires as a whole: every exchange lives as long as the newest.
            conn.execute(
                "UPDATE turns SET expires_at = ? WHERE node = ? AND channel = ?",
                (exchange.at + idle_s, node, key),
            )
            conn.execute("DELETE FROM asked_with WHERE query_id = ?", (query_id,))

    def forget(self, node: int, channel: int | None) -> int:
        """Delete the conversation; returns how many exchanges it had."""
        with self._store._tx() as conn:
            cur = conn.execute("DELETE FROM turns WHERE node = ? AND channel = ?", (node, channel_key(channel)))
            return cur.rowcount

    def save_snapshot(self, asked: Asked, node: int, channel: int | None, history: Sequence[Exchange]) -> None:
        """Keep the history question `asked` is being asked with (the first snapshot wins)."""
        data = json.dumps([exchange_row(e) for e in history], ensure_ascii=False)
        with self._store._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO asked_with (query_id, node, channel, history, at) VALUES (?, ?, ?, ?, ?)",
                (asked.query_id, node, channel_key(channel), data, self.now()),
            )

    def snapshot(self, asked: Asked) -> Snapshot | None:
        """The conversation and history question `asked` started with, if it started and is not answered."""
        with self._store._tx() as conn:
            row = conn.execute(
                "SELECT node, channel, history FROM asked_with WHERE query_id = ?", (asked.query_id,)
            ).fetchone()
        if row is None:
            return None
        return Snapshot(row[0], row[1], tuple(exchange_of(r) for r in json.loads(row[2])))
