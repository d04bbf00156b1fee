"""Answers to a node that stopped answering: once one fragment is given up, the rest is held for "more".

A fragment the radio gave up on (the node retransmitted it and heard no ACK) means the asker is out of reach
for now. Sending the fragments after it would cost air time for an answer that starts at ``2/+`` on the
handset, if it arrives at all; so they are kept, joined back into text, as the node's "more" remainder,
starting at the index that failed. The model may still be writing when that happens: fragments that reach
the sender later, and the capped tail the worker keeps for "more", join the same remainder.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from meshbot.core.domain import SendResult
from meshbot.core.events import Event
from meshbot.core.fragmenter import strip_numbering
from meshbot.core.ids import node_id

log = logging.getLogger(__name__)

# Answers remembered at once (held ones, and tails kept for ones still sending): a bound, not a working set.
MAX_ANSWERS = 256
# Why a fragment was not delivered that says the node is out of reach (not "the packet could never go").
UNREACHABLE_REASONS = frozenset({"TIMEOUT", "MAX_RETRANSMIT", "NO_RESPONSE", "NO_ROUTE", "NO_INTERFACE"})


class Remainders(Protocol):
    """Where "more" remainders live (the store)."""

    def put_remainder(self, node: int, text: str, next_index: int) -> None: ...


@dataclass
class _Answer:
    node: int
    held_from: int | None = None  # index of the fragment given up; None: still sending
    bodies: list[str] = field(default_factory=list)
    tail: tuple[str, int] | None = None  # the worker's capped remainder and its next index


class Holdback:
    """Per-answer hold state, shared by the sender (verdicts, queued fragments) and the worker (tails)."""

    def __init__(self, remainders: Remainders, tag: str, max_answers: int = MAX_ANSWERS) -> None:
        self._remainders = remainders
        self._tag = tag
        self._max = max_answers
        self._lock = threading.Lock()
        self._answers: OrderedDict[int, _Answer] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)

    def is_held(self, query_id: int | None) -> bool:
        """True once a fragment of this answer was given up: its later fragments are not sent."""
        with self._lock:
            answer = self._answers.get(query_id) if query_id is not None else None
            return answer is not None and answer.held_from is not None

    def give_up(self, query_id: int, node: int, index: int, text: str, result: SendResult, attempts: int) -> None:
        """Fragment `index` (`text` as sent) was not delivered: hold it and everything after it."""
        with self._lock:
            answer = self._entry(query_id, node)
            if answer.held_from is not None:
                return
            answer.held_from = index
            answer.bodies.append(strip_numbering(text, self._tag))
            self._write(answer)
        unreachable = result.reason in UNREACHABLE_REASONS
        log.warning(
            "%s %s: fragment %d of q%d not delivered (%s after %d attempt(s)); the rest of the answer is held "
            'for "more"',
            node_id(node),
            "unreachable" if unreachable else "not served",
            index,
            query_id,
            result.reason,
            attempts,
            extra={
                "event": Event.UNREACHABLE if unreachable else Event.ANSWER_HELD,
                "reason": result.reason,
                "query_id": query_id,
                "index": index,
            },
        )

    def divert(self, query_id: int, text: str) -> None:
        """A later fragment of a held answer: add it to the remainder instead of sending it."""
        with self._lock:
            answer = self._answers.get(query_id)
            if answer is None or answer.held_from is None:
                return
            answer.bodies.append(strip_numbering(text, self._tag))
            self._write(answer)

    def keep_tail(self, query_id: int, node: int, text: str, next_index: int) -> None:
        """The worker's capped remainder: stored for "more", joined after the held fragments if any."""
        with self._lock:
            answer = self._entry(query_id, node)
            answer.tail = (text, next_index)
            if answer.held_from is None:
                self._remainders.put_remainder(node, text, next_index)
            else:
                self._write(answer)

    def _entry(self, query_id: int, node: int) -> _Answer:
        answer = self._answers.get(query_id)
        if answer is None:
            answer = self._answers[query_id] = _Answer(node)
            while len(self._answers) > self._max:
                self._answers.popitem(last=False)  # the oldest answer is long finished
        return answer

    def _write(self, answer: _Answer) -> None:
        assert answer.held_from is not None
        parts = [b for b in answer.bodies if b.strip()]
        if answer.tail is not None:
            parts.append(answer.tail[0])
        self._remainders.put_remainder(answer.node, " ".join(p.strip() for p in parts), answer.held_from)
