"""Recovery and upkeep of the durable queue: resume after a restart, expire stale questions, prune."""

from __future__ import annotations

import logging

from meshbot.core.config import Config
from meshbot.core.domain import Outbound
from meshbot.core.events import Event, Reason
from meshbot.core.fragmenter import labelled
from meshbot.core.ids import node_id
from meshbot.service.ledger import Ledger, resumed_query
from meshbot.service.queueing import Admission, QueryQueue
from meshbot.service.sender import Sender, SendJob
from meshbot.storage.store import FragmentState, Store, StoredQuery

log = logging.getLogger(__name__)

APOLOGY = "Sorry, your question waited too long and was dropped. Please ask again."
EXPIRE_EVERY_S = 30.0
PRUNE_EVERY_S = 3600.0


class Housekeeper:
    """Puts a previous run's unfinished work back in motion, and keeps the store tidy."""

    def __init__(self, cfg: Config, store: Store, ledger: Ledger, sender: Sender, query_queue: QueryQueue) -> None:
        self._cfg = cfg
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
            if stored.generation_done and stored.fragments:
                self._resend(stored)
            else:
                self._requeue(stored, now)

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
            out = Outbound(frag.text, stored.reply_to, stored.reply_channel, stored.want_ack, reply_id=stored.packet_id)
            self._sender.submit(
                SendJob(
                    out,
                    f"q{stored.query_id} #{frag.index} (resumed)",
                    stored.query_id,
                    frag.index,
                    on_done=self._ledger.on_sent,
                )
            )

    def _requeue(self, stored: StoredQuery, now: float) -> None:
        query = resumed_query(stored, now)
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
                extra={"event": Event.DROPPED, "reason": "queue full on resume"},
            )
            self._ledger.dropped(stored.query_id, "queue full on resume")

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
            removed = self._store.prune(self._cfg.store.keep_days)
            if removed:
                log.info("pruned %d old row(s) from the store", removed)
