"""Recovery and upkeep of the durable queue: resume after a restart, expire stale questions, prune.

A question whose answer was still being written when the daemon died is finished one of two ways, and
never by splicing two generations: with a deterministic backend (same request and seed, same text) it is
written again and the fragments already delivered are skipped; otherwise the fragments stored are sent
and the answer ends with a short cut-off marker, and the model is not asked again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from meshbot.core.config import Config
from meshbot.core.domain import Outbound
from meshbot.core.events import Event, Reason
from meshbot.core.fragmenter import cut_off_ending, is_final_text, labelled
from meshbot.core.ids import node_id
from meshbot.core.trust import remainder_slot
from meshbot.service.ledger import Ledger, resumed_query
from meshbot.service.queueing import Admission, Query, QueryQueue
from meshbot.service.sender import Sender, SendJob
from meshbot.service.worker import REMAINDER_TTL_S, fragment_budget
from meshbot.storage.store import FragmentState, Store, StoredQuery

log = logging.getLogger(__name__)

APOLOGY = "Sorry, your question waited too long and was dropped. Please ask again."
EXPIRE_EVERY_S = 30.0
PRUNE_EVERY_S = 3600.0


class Housekeeper:
    """Puts a previous run's unfinished work back in motion, and keeps the store tidy."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        ledger: Ledger,
        sender: Sender,
        query_queue: QueryQueue,
        deterministic: bool,
        is_emergency: Callable[[str], bool] | None = None,
        alike: Callable[[Query], bool] | None = None,
    ) -> None:
        self._cfg = cfg
        self._is_emergency = is_emergency  # a question with an emergency word goes back to the head of the queue
        self._deterministic = deterministic  # the model's: may a cut-short answer be written again?
        # Per question: does a fresh evaluation give its prompt the state its first generation had? (Not for a
        # conversation whose saved state had old exchanges shifted out: service.memory.regenerates_alike.)
        self._alike = alike
        self._store = store
        self._ledger = ledger
        self._sender = sender
        self._queue = query_queue
        self._next_expire = 0.0
        self._next_prune = 0.0

    def resume(self, now: float) -> None:
        """Expire what is too old, then answer or finish sending everything else."""
        self.expire()
        for stored in self._store.unfinished():
            self.resume_one(stored, now)

    def resume_one(self, stored: StoredQuery, now: float) -> None:
        """Finish one unfinished question: resend what is written, end it cut off, or queue it again."""
        if stored.generation_done and stored.fragments:
            self._resend(stored)
        elif stored.fragments and not self._regenerable(stored, now):
            self._resend(self._end_cut_off(stored, now))
        else:
            self._requeue(stored, now)

    def _regenerable(self, stored: StoredQuery, now: float) -> bool:
        """Whether writing the answer again gives the text whose first fragments went out."""
        if not self._deterministic:
            return False
        return self._alike is None or self._alike(resumed_query(stored, now))

    def _end_cut_off(self, stored: StoredQuery, now: float) -> StoredQuery:
        """Finish from the stored fragments alone: a new generation would not match what was sent."""
        last = stored.fragments[-1]
        ending = None  # a final fragment was stored: only the "generation finished" mark was lost
        tag = self._cfg.mesh.ai_tag
        if not is_final_text(last.index, last.text, tag):
            budget = fragment_budget(self._cfg, resumed_query(stored, now))
            ending = cut_off_ending(last.index, last.text, budget, last.state is FragmentState.PENDING, tag)
        log.warning(
            "resuming q%d for %s: its answer was cut short and the model cannot write the same text again; "
            "sending the %d stored fragment(s)%s",
            stored.query_id,
            node_id(stored.sender),
            len(stored.fragments),
            "" if ending is None else " and a cut-off marker",
            extra={"event": Event.CUT_OFF, "query_id": stored.query_id},
        )
        return self._ledger.ended_without_model(stored.query_id, ending)

    def _resend(self, stored: StoredQuery) -> None:
        left = [f for f in stored.fragments if f.state is not FragmentState.ACKED]
        log.info(
            "resuming q%d for %s: %d of %d fragment(s) still to send",
            stored.query_id,
            node_id(stored.sender),
            len(left),
            len(stored.fragments),
            extra={"event": Event.RESUMED, "query_id": stored.query_id, "fragments": len(left)},
        )
        for frag in left:
            # A fragment on air before the restart goes again under its id: a handset that has it drops the copy,
            # and an ACK the node held for us while we were down settles it at once.
            same_id = frag.packet_id if frag.state is FragmentState.SENT else None
            out = Outbound(frag.text, stored.reply_to, stored.reply_channel, stored.want_ack, stored.packet_id, same_id)
            self._sender.submit(
                SendJob(
                    out,
                    f"q{stored.query_id} #{frag.index} (resumed)",
                    stored.query_id,
                    frag.index,
                    on_done=self._ledger.on_sent,
                    asker=remainder_slot(resumed_query(stored, 0.0).inbound),  # its conversation's remainder
                )
            )

    def _requeue(self, stored: StoredQuery, now: float) -> None:
        query = resumed_query(stored, now)
        if self._is_emergency is not None and self._is_emergency(stored.question):
            query = dataclasses.replace(query, emergency=True)
        if self._queue.put(query) is Admission.ACCEPTED:
            log.info(
                "resuming q%d for %s: queued again (%d fragment(s) already delivered)",
                stored.query_id,
                node_id(stored.sender),
                len(query.skip),
                extra={"event": Event.RESUMED, "query_id": stored.query_id},
            )
        else:
            log.warning(
                "dropped q%d on resume: queue full",
                stored.query_id,
                extra={"event": Event.DROPPED, "reason": Reason.QUEUE_FULL_ON_RESUME},
            )
            self._ledger.dropped(stored.query_id, Reason.QUEUE_FULL_ON_RESUME)

    def expire(self) -> None:
        """Drop unanswered questions older than `store.max_age_s`; apologise by DM."""
        for stale in self._store.expire(self._cfg.store.max_age_s):
            log.warning(
                "dropped q%d from %s: older than %.0fs",
                stale.query_id,
                node_id(stale.sender),
                self._cfg.store.max_age_s,
                extra={"event": Event.DROPPED, "reason": Reason.STALE},
            )
            if stale.is_dm:
                text = labelled(APOLOGY, self._cfg.mesh.ai_tag, self._cfg.mesh.max_fragment_bytes)
                out = Outbound(text, stale.sender, stale.reply_channel, want_ack=True)
                self._sender.submit(SendJob(out, f"q{stale.query_id} apology"))

    def tick(self, now: float) -> None:
        """Periodic upkeep, called from the intake thread when it is idle."""
        if now >= self._next_expire:
            self._next_expire = now + EXPIRE_EVERY_S
            self.expire()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            removed = self._store.prune(self._cfg.store.keep_days) + self._store.expire_remainders(REMAINDER_TTL_S)
            if removed:
                log.info("pruned %d old row(s) from the store", removed)
