"""The daemon's ledger, mirrored into the shared work log so another worker can finish what this one started.

Every write the local ledger makes that a successor needs (the question, each fragment before it can be
sent, "handed to the broker", "generation finished", "closed") also goes to Redis. A question another
worker has taken over (this one was silent past its lease) is fenced: no new fragment of it leaves here.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from meshbot.cluster.worklog import Held, WorkLog
from meshbot.core.domain import Inbound
from meshbot.core.events import Event, Reason
from meshbot.core.policy import Accept
from meshbot.service.ledger import Ledger
from meshbot.service.queueing import Query
from meshbot.service.sender import SendJob
from meshbot.storage.store import TERMINAL, Store, StoredQuery

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker took this question over: stop answering it here."""


def record_fields(query: Query, wall: float) -> dict[str, str]:
    """What a successor needs to answer the question again."""
    d, m = query.decision, query.inbound
    return {
        "sender": str(m.sender),
        "packet_id": str(m.packet_id),
        "question": d.question,
        "kind": d.kind.value,
        "reply_to": str(d.reply_to),
        "reply_channel": str(d.reply_channel),
        "want_ack": "1" if d.want_ack else "0",
        "is_dm": "1" if m.is_dm else "0",
        "pki": "1" if m.is_dm and m.pki else "0",
        "seed": str(query.seed),
        "accepted_at": repr(wall),
    }


class ClusterLedger(Ledger):
    """A Ledger whose open questions also live in the shared work log."""

    def __init__(self, store: Store, work: WorkLog) -> None:
        super().__init__(store)
        self.work = work
        self._held: dict[int, Held] = {}  # local query id -> its entry in the work log
        self._lost: set[int] = set()
        # Given to an idle sibling and not yet taken: still renewed here, so it never looks like a dead worker's.
        self._given: dict[int, Held] = {}
        self._lock = threading.Lock()

    # -- what the custodian asks -------------------------------------------------------------------
    def held(self) -> dict[int, Held]:
        """The open questions this worker holds, by local id."""
        with self._lock:
            return dict(self._held)

    def adopt(self, query_id: int, held: Held) -> None:
        """A question taken over from another worker, now stored locally as `query_id`."""
        with self._lock:
            self._held[query_id] = held

    def give(self, query_id: int) -> None:
        """This worker handed the (queued, unstarted) question back: renew it until another takes it."""
        with self._lock:
            self._lost.add(query_id)  # fenced: it is never answered here under this id
            held = self._held.pop(query_id, None)
            if held is not None:
                self._given[query_id] = held

    def given(self) -> dict[int, Held]:
        """Questions handed back and not yet taken, by local id."""
        with self._lock:
            return dict(self._given)

    def taken(self, query_id: int) -> None:
        """Another worker took a question this one had given."""
        with self._lock:
            self._given.pop(query_id, None)

    def lose(self, query_id: int) -> None:
        """Another worker owns this question now: fence it."""
        with self._lock:
            self._lost.add(query_id)
            self._held.pop(query_id, None)

    def _get(self, query_id: int) -> Held | None:
        with self._lock:
            if query_id in self._lost:
                raise LeaseLost(f"q{query_id} was taken over by another worker")
            return self._held.get(query_id)

    # -- the Ledger, mirrored ---------------------------------------------------------------------
    def accept(self, msg: Inbound, decision: Accept, now: float, seed: int) -> Query:
        """Write the question locally and to the work log, owned by this worker."""
        return self._share(super().accept(msg, decision, now, seed))

    def joined(self, parts: list[Query], question: str) -> Query:
        """A multi-part question complete: the joined question goes to the work log like any accepted one."""
        # Parts still waiting for the rest stay with the worker that heard them (local, durable in its store).
        return self._share(super().joined(parts, question))

    def _share(self, query: Query) -> Query:
        msg = query.inbound
        try:
            held = self.work.enqueue(self.work.qkey(msg.sender, msg.packet_id), record_fields(query, time.time()))
        except redis.RedisError as exc:
            log.error(
                "cluster: q%d kept only here (%s): no other worker can finish it if this one dies",
                query.query_id,
                exc,
                extra={"event": Event.CLUSTER_ERROR, "query_id": query.query_id},
            )
            return query
        with self._lock:
            self._held[query.query_id] = held
        return query

    def fragment(self, query: Query, index: int, text: str) -> None:
        """Keep the fragment in the work log, then locally; refused once the lease is lost."""
        held = self._get(query.query_id)
        if held is not None:
            self._quietly(self.work.fragment, held, index, text)  # Redis away: answer on, unprotected
        super().fragment(query, index, text)

    def published(self, job: SendJob, packet_id: int) -> None:
        """The fragment reached the broker: a successor starts after it."""
        super().published(job, packet_id)
        if job.query_id is None or job.index is None:
            return
        with self._lock:
            held = self._held.get(job.query_id)
        if held is not None:
            self._quietly(self.work.published, held, job.index)

    def generated(self, query: Query) -> None:
        """The model finished: say so in the work log, then close locally if all is sent."""
        held = self._get(query.query_id)
        if held is not None:
            self._quietly(self.work.generated, held)
        super().generated(query)

    def ended_without_model(self, query_id: int, ending: tuple[int, str] | None) -> StoredQuery:
        """A taken-over answer ended with its cut-off marker: the marker is kept in the work log too."""
        held = self._get(query_id)
        if held is not None:
            if ending is not None:
                self._quietly(self.work.fragment, held, *ending)
            self._quietly(self.work.generated, held)
        return super().ended_without_model(query_id, ending)

    def dropped(self, query_id: int, reason: str) -> None:
        """Closed without an answer."""
        super().dropped(query_id, reason)
        self._close(query_id)

    def failed(self, query_id: int, reason: str) -> None:
        """Closed as failed; a question lost to another worker is only marked so here."""
        with self._lock:
            lost = query_id in self._lost
        if lost:
            log.warning(
                "q%d is answered by another worker now: stopped here",
                query_id,
                extra={"event": Event.LEASE_LOST, "query_id": query_id},
            )
            super().dropped(query_id, Reason.LEASE_LOST)
            return
        super().failed(query_id, reason)
        self._close(query_id)

    def _maybe_close(self, query_id: int) -> None:
        super()._maybe_close(query_id)  # after every fragment's verdict and the end of generation
        stored = self.store.get(query_id)
        if stored is not None and stored.state in TERMINAL:
            self._close(query_id)

    def _close(self, query_id: int) -> None:
        with self._lock:
            held = None if query_id in self._lost else self._held.pop(query_id, None)
        if held is not None:
            self._quietly(self.work.finish, held)

    def _quietly(self, op: object, *args: object) -> None:
        try:
            op(*args)  # type: ignore[operator]
        except redis.RedisError as exc:
            log.error("cluster: %s failed: %s", getattr(op, "__name__", op), exc, extra={"event": Event.CLUSTER_ERROR})
