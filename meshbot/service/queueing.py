"""The query queue in front of the one model worker: bounded, and fair across nodes.

Durability is not its job: every query in it was written to the store first, and after a restart
`service.resume` queues again what was left. `QueryQueue` is the seam the daemon is given.
"""

from __future__ import annotations

import enum
import itertools
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

from meshbot.core.domain import Inbound
from meshbot.core.ids import node_id
from meshbot.core.policy import Accept
from meshbot.core.trust import UNPROVEN_DM, conversation_of


class Admission(enum.Enum):
    """What `put` did with a query."""

    ACCEPTED = "accepted"
    FULL = "full"  # the whole queue is at max_depth
    NODE_FULL = "node-full"  # this node already has max_per_node waiting


_ids = itertools.count(1)


@dataclass(frozen=True)
class Query:
    """One accepted question, waiting for the model."""

    inbound: Inbound
    decision: Accept
    accepted_at: float
    query_id: int = field(default_factory=lambda: next(_ids))
    seed: int = -1  # the model seed kept with the query, so a resumed answer is the same answer
    skip: frozenset[int] = frozenset()  # fragment indices already delivered before a restart
    emergency: bool = False  # the emergency lane's: first in the queue, answered while paused or asleep

    @property
    def node(self) -> int:
        """The asking node."""
        return self.inbound.sender

    @property
    def conversation(self) -> tuple[int, int | None]:
        """(node, channel) of its conversation: channel None for a proven DM (core.trust.conversation_of)."""
        return conversation_of(self.inbound)

    @property
    def conversation_name(self) -> str:
        """The conversation as one string, e.g. ``!0a1b2c3d/dm`` or ``!0a1b2c3d/ch0``."""
        node, channel = self.conversation
        if channel is None:
            return f"{node_id(node)}/dm"
        return f"{node_id(node)}/{'unproven-dm' if channel == UNPROVEN_DM else f'ch{channel}'}"


class QueryQueue(Protocol):
    """Where accepted queries wait for the worker."""

    def put(self, query: Query) -> Admission:
        """Admit a query, or say why not."""

    def get(self, timeout: float, *, urgent_only: bool = False) -> Query | None:
        """The next query in fair order (emergencies first), or None after `timeout` seconds or once closed.

        `urgent_only`: only an emergency will do (the bot is paused or asleep); the rest keep waiting.
        """

    def depth(self) -> int:
        """Queries waiting."""

    def steal(self) -> Query | None:
        """Take out the query that would be answered last (for an idle worker elsewhere), or None."""

    def close(self) -> None:
        """Wake every waiter; later gets return None."""


class FairQueue:
    """Round-robin over nodes: each node's queries wait in its own line, lines take turns."""

    def __init__(self, max_depth: int, max_per_node: int) -> None:
        self._max_depth = max_depth
        self._max_per_node = max_per_node
        self._lines: OrderedDict[int, deque[Query]] = OrderedDict()
        self._size = 0
        self._closed = False
        self._cond = threading.Condition()
        self._urgent: deque[Query] = deque()  # emergencies: before every line, never refused

    def put(self, query: Query) -> Admission:
        """Admit `query` unless the queue or its node's line is full (an emergency always gets in, first)."""
        with self._cond:
            if query.emergency:
                self._urgent.append(query)
                self._cond.notify_all()
                return Admission.ACCEPTED
            line = self._lines.get(query.node)
            if line is not None and len(line) >= self._max_per_node:
                return Admission.NODE_FULL
            if self._size >= self._max_depth:
                return Admission.FULL
            if line is None:
                line = self._lines[query.node] = deque()
            line.append(query)
            self._size += 1
            self._cond.notify()
            return Admission.ACCEPTED

    def get(self, timeout: float, *, urgent_only: bool = False) -> Query | None:
        """Take an emergency, else the head of the next node's line; that node then goes to the back."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: bool(self._urgent) or (self._size > 0 and not urgent_only) or self._closed, timeout
            ):
                return None
            if self._urgent:
                return self._urgent.popleft()
            if self._size == 0 or urgent_only:
                return None
            node, line = next(iter(self._lines.items()))
            query = line.popleft()
            del self._lines[node]
            if line:
                self._lines[node] = line  # re-insert at the back: the next node goes first
            self._size -= 1
            return query

    def depth(self) -> int:
        """Queries waiting."""
        with self._cond:
            return self._size + len(self._urgent)

    def steal(self) -> Query | None:
        """Take the last query of the last node's line: the one this queue would answer last."""
        with self._cond:  # the same lock as get(): a query is either answered here or given away, never both
            if not self._lines:
                return None
            node, line = next(reversed(self._lines.items()))
            query = line.pop()
            if not line:
                del self._lines[node]
            self._size -= 1
            return query

    def close(self) -> None:
        """Wake every waiter."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
