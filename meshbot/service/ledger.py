"""Durable bookkeeping: every accepted query and fragment, as the daemon moves it along.

The worker and the sender report here; the ledger writes the store, and closes a query as
done or failed once its last fragment has an outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import random

from meshbot.core import limits
from meshbot.core.domain import AckStatus, Inbound, SendResult
from meshbot.core.policy import Accept, Kind
from meshbot.service.queueing import Query
from meshbot.service.sender import SendJob
from meshbot.storage.store import FragmentState, QueryState, Store, StoredQuery

log = logging.getLogger(__name__)

_DELIVERED = (AckStatus.ACKED, AckStatus.IMPLICIT, AckStatus.SENT)


class Ledger:
    """The daemon's view of the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def accept(self, msg: Inbound, decision: Accept, now: float, seed: int) -> Query:
        """Write an accepted query; only then may it be logged and queued."""
        if seed < 0:
            seed = random.getrandbits(31)
        query_id = self.store.add_query(msg, decision, seed)
        return Query(msg, decision, now, query_id=query_id, seed=seed)

    def hold(self, msg: Inbound, decision: Accept, now: float, seed: int) -> Query:
        """Write a part of a multi-part question as JOINING: durable before the rest arrives."""
        if seed < 0:
            seed = random.getrandbits(31)
        query_id = self.store.add_query(msg, decision, seed, QueryState.JOINING)
        return Query(msg, decision, now, query_id=query_id, seed=seed)

    def joined(self, parts: list[Query], question: str) -> Query:
        """Turn waiting parts into one queued question: the last part's row, packet and seed."""
        self.store.join_parts(tuple(p.query_id for p in parts), question)
        last = parts[-1]
        decision = dataclasses.replace(last.decision, question=question)
        return Query(last.inbound, decision, parts[0].accepted_at, query_id=last.query_id, seed=last.seed)

    def generating(self, query: Query) -> None:
        """The worker took the query."""
        self.store.set_state(query.query_id, QueryState.GENERATING)

    def fragment(self, query: Query, index: int, text: str) -> None:
        """A fragment exists: write it before it is handed to the sender."""
        self.store.add_fragment(query.query_id, index, text)

    def generated(self, query: Query) -> None:
        """The model finished; only sending is left."""
        self._generated(query.query_id)

    def ended_without_model(self, query_id: int, ending: tuple[int, str] | None) -> StoredQuery:
        """Close a generation a crash cut short from what is stored, plus `ending` (index, text) if any."""
        if ending is not None:
            self.store.add_fragment(query_id, *ending)
        self._generated(query_id)
        stored = self.store.get(query_id)
        if stored is None:
            raise KeyError(f"no query {query_id}")
        return stored

    def _generated(self, query_id: int) -> None:
        self.store.generation_finished(query_id)
        self.store.set_state(query_id, QueryState.SENDING)
        self._maybe_close(query_id)

    def dropped(self, query_id: int, reason: str) -> None:
        """The query will not be answered."""
        self.store.set_state(query_id, QueryState.DROPPED, reason)

    def failed(self, query_id: int, reason: str) -> None:
        """Answering the query failed."""
        self.store.set_state(query_id, QueryState.FAILED, reason)

    def published(self, job: SendJob, packet_id: int) -> None:
        """A fragment was handed to the radio (the sender's hook, each attempt): SENT under `packet_id`.

        Written before any ACK wait, so that after a crash the fragment goes again under the same id.
        """
        if job.query_id is not None and job.index is not None:
            self.store.fragment_sent(job.query_id, job.index, packet_id)

    def on_sent(self, job: SendJob, result: SendResult, attempts: int) -> None:
        """The sender's verdict on one fragment (SendJob.on_done)."""
        if job.query_id is None or job.index is None:
            return
        state = FragmentState.ACKED if result.status in _DELIVERED else FragmentState.FAILED
        self.store.fragment_done(job.query_id, job.index, state)
        self._maybe_close(job.query_id)

    def _maybe_close(self, query_id: int) -> None:
        stored = self.store.get(query_id)
        if stored is None or not stored.generation_done or stored.state is not QueryState.SENDING:
            return
        states = [f.state for f in stored.fragments]
        if any(s in (FragmentState.PENDING, FragmentState.SENT) for s in states):
            return
        if all(s is FragmentState.ACKED for s in states):
            self.store.set_state(query_id, QueryState.DONE)
        else:
            self.store.set_state(query_id, QueryState.FAILED, "fragment not delivered")


def resumed_query(stored: StoredQuery, now: float) -> Query:
    """Rebuild a queued query from the store after a restart."""
    msg = Inbound(
        sender=stored.sender,
        to=0 if stored.is_dm else limits.BROADCAST_NUM,
        packet_id=stored.packet_id,
        portnum="TEXT_MESSAGE_APP",
        text=stored.question,
        payload_len=len(stored.question.encode("utf-8")),
        channel=stored.reply_channel,
        is_dm=stored.is_dm,
        pki=stored.proven,
    )
    decision = Accept(Kind(stored.kind), stored.question, stored.reply_to, stored.reply_channel, stored.want_ack)
    done = frozenset(f.index for f in stored.fragments if f.state is FragmentState.ACKED)
    return Query(msg, decision, now, query_id=stored.query_id, seed=stored.seed, skip=done)
