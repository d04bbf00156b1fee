"""What the store hands out: query and fragment states, and the stored query with its fragments."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class QueryState(enum.Enum):
    """Where a query is in its life."""

    QUEUED = "queued"
    GENERATING = "generating"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    DROPPED = "dropped"
    JOINING = "joining"  # a part of a multi-part question, waiting for the rest (core/joiner.py)
    JOINED = "joined"  # a part whose text went into a later part's row, which is answered instead


class FragmentState(enum.Enum):
    """Where one fragment of a reply is on air."""

    PENDING = "pending"
    SENT = "sent"
    ACKED = "acked"
    FAILED = "failed"


UNFINISHED = (QueryState.QUEUED, QueryState.GENERATING, QueryState.SENDING)
TERMINAL = (QueryState.DONE, QueryState.FAILED, QueryState.DROPPED, QueryState.JOINED)
# Entering a terminal state records this health event, in the same transaction (see `Store.set_state`).
TERMINAL_EVENT = {QueryState.DONE: "answered", QueryState.FAILED: "failed", QueryState.DROPPED: "dropped"}
OUTCOMES = tuple(TERMINAL_EVENT.values())


class StoreError(Exception):
    """The database cannot be used (corrupt, or written by a newer meshbot)."""


class StoreMissing(StoreError):
    """A read-only open found no database file."""


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
    proven: bool = False  # a PKI-proven DM (stored as is_dm = 2): its owner's conversation, not an unproven one

    @property
    def first_unacked(self) -> StoredFragment | None:
        """The fragment a resumed send starts from: the first one not ACKed."""
        return next((f for f in self.fragments if f.state is not FragmentState.ACKED), None)


INSERT_COLS = (
    "sender, packet_id, question, kind, reply_to, reply_channel, want_ack, is_dm, "
    "accepted_at, state, seed, generation_done"
)
QUERY_COLS = "query_id, " + INSERT_COLS


def placeholders(states: tuple[QueryState, ...]) -> tuple[str, list[str]]:
    """SQL "?,?,?" for `states` and their values, for an `IN (...)` clause."""
    return ",".join("?" * len(states)), [s.value for s in states]


def to_query(row: tuple[Any, ...], fragments: tuple[StoredFragment, ...]) -> StoredQuery:
    """A StoredQuery from a row selected as QUERY_COLS."""
    (query_id, sender, packet_id, question, kind, reply_to, reply_channel) = row[:7]
    want_ack, is_dm, accepted_at, state, seed, generation_done = row[7:]
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
        proven=is_dm == 2,
    )
