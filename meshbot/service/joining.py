"""Where the parts of a multi-part question wait (the rule is in core/joiner.py).

Durability: a part the gate admitted is written to the store (state JOINING) before it is held here, so a
restart loses no accepted part; `restore` holds them again at start-up. A join ends in one transaction
(`Store.join_parts`): the last part's row takes the joined question and is queued, the others are JOINED.
A complete-looking question with nothing waiting skips all this and is accepted as before.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Hashable

from meshbot.core.config import JoinConfig
from meshbot.core.domain import Clock, Inbound
from meshbot.core.events import Event
from meshbot.core.ids import node_id
from meshbot.core.joiner import Joiner, Shape, Waiting, judge
from meshbot.core.policy import Accept
from meshbot.service.ledger import Ledger, resumed_query
from meshbot.service.queueing import Query
from meshbot.storage.store import StoredQuery

log = logging.getLogger(__name__)


def conversation(msg: Inbound) -> Hashable:
    """Whose parts join: one node's DMs, or one node on one channel."""
    return (msg.sender, msg.is_dm, msg.channel)


class JoinDesk:
    """Holds waiting parts per conversation and hands finished questions back to the intake."""

    def __init__(self, cfg: JoinConfig, ledger: Ledger, clock: Clock, seed: int) -> None:
        self._cfg = cfg
        self._ledger = ledger
        self._clock = clock
        self._seed = seed
        self._joiner: Joiner[Query] = Joiner(cfg)
        self._lock = threading.RLock()  # the intake thread ticks; tests and tools may admit from theirs

    def waiting(self, msg: Inbound) -> bool:
        """True when this message's conversation has parts waiting."""
        with self._lock:
            return self._joiner.waiting(conversation(msg))

    def pending(self) -> int:
        """Conversations with parts waiting."""
        with self._lock:
            return len(self._joiner)

    def offer(self, msg: Inbound, decision: Accept) -> Query | None:
        """An admitted question or part: the question to queue now, or None while parts are still coming."""
        with self._lock:
            return self._offer(msg, decision)

    def _offer(self, msg: Inbound, decision: Accept) -> Query | None:
        now = self._clock.now()
        key = conversation(msg)
        part = judge(decision.question, self._cfg)
        if not self._cfg.enabled or (part.shape is Shape.COMPLETE and not self._joiner.waiting(key)):
            return self._ledger.accept(msg, decision, now, self._seed)
        held = self._ledger.hold(msg, dataclasses.replace(decision, question=part.text), now, self._seed)
        done = self._joiner.add(key, held, part, now)
        if done is not None:
            return self._finish(done)
        log.info(
            "holding q%d from %s as part %d (%s): waiting for the rest",
            held.query_id,
            node_id(msg.sender),
            self._joiner.count(key),
            part.shape.value,
            extra={"event": Event.HELD, "query_id": held.query_id, "part": part.shape.value},
        )
        return None

    def due(self) -> list[Query]:
        """Questions whose parts stopped arriving: join them and hand them over."""
        with self._lock:
            return [self._finish(join) for join in self._joiner.due(self._clock.now())]

    def restore(self, stored: list[StoredQuery]) -> list[Query]:
        """Hold again the parts a previous run was waiting on (oldest first); return joins they complete."""
        now = self._clock.now()
        ready = []
        for row in stored:
            query = resumed_query(row, now)
            done = self._joiner.add(conversation(query.inbound), query, judge(row.question, self._cfg), now)
            if done is not None:
                ready.append(self._finish(done))
        if stored:
            log.info(
                "restored %d waiting part(s) of multi-part questions",
                len(stored),
                extra={"event": Event.RESUMED, "parts": len(stored)},
            )
        return ready

    def _finish(self, join: Waiting[Query]) -> Query:
        query = self._ledger.joined(join.items, join.question)
        log.info(
            "joined %d part(s) from %s into q%d (%d B)",
            len(join.items),
            node_id(query.node),
            query.query_id,
            len(query.decision.question.encode("utf-8")),
            extra={"event": Event.JOINED, "parts": len(join.items), "query_id": query.query_id},
        )
        return query
