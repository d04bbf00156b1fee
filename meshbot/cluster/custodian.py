"""Keeps this worker's leases, takes over silent workers' questions, hands its own back at shutdown.

One thread, apart from the model and the sender, so a long generation never lets a lease lapse:
- every lease/4 it renews the entries this worker holds; one it no longer owns is fenced (LeaseLost);
- every second it takes handed-back entries, then entries idle for a whole lease (XAUTOCLAIM), and
  finishes each as a restart would (service.resume): the fragments already handed to the broker are
  never sent again; a deterministic model writes the rest again, any other ends with the cut-off marker;
- every heartbeat it says it is alive, with its queue, for `meshbot status` on any worker.
At start it gives its local leftovers to the shared log (which holds them) and takes back at once what
its worker id still owns; at a graceful stop it hands back everything it holds, unsent.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from meshbot.cluster.ledger import ClusterLedger
from meshbot.cluster.shared import Shared
from meshbot.cluster.worklog import Held, Record
from meshbot.core import limits
from meshbot.core.domain import Inbound
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id
from meshbot.core.policy import Accept, Kind
from meshbot.storage.store import FragmentState, QueryState

if TYPE_CHECKING:
    from meshbot.service.daemon import Daemon

log = logging.getLogger(__name__)

TAKE_EVERY_S = 1.0
TAKE_AT_ONCE = 8


class Custodian:
    """The daemon's companion when `[cluster]` is on (service.daemon.Companion)."""

    def __init__(self, shared: Shared, ledger: ClusterLedger) -> None:
        self._shared = shared
        self._ledger = ledger
        self._work = ledger.work
        self._cfg = shared.cfg
        self._stop = threading.Event()
        self._quiet = threading.Event()  # set when the daemon begins to stop: renew, but take nothing new
        self._thread: threading.Thread | None = None
        self._daemon: Daemon | None = None
        self.taken_over = 0

    def start(self, daemon: Daemon) -> None:
        """Hand local leftovers to the shared log, take back our own entries, start the thread."""
        self._daemon = daemon
        self._work.ensure_group()
        for stored in daemon.store.unfinished():
            # The shared log holds this question; whoever owns its entry there finishes it, exactly once.
            # One accepted while Redis was away is only here: the daemon's own resume finishes it.
            if self._work.exists(stored.sender, stored.packet_id):
                daemon.store.set_state(stored.query_id, QueryState.DROPPED, Reason.HANDED_TO_CLUSTER)
        self._adopt(self._work.take_mine(), "restarted worker")
        self._beat()
        self._thread = threading.Thread(target=self._run, name="meshbot-custodian", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_renew = next_take = next_beat = 0.0
        away = False  # one error line per outage, one line when it ends: not one a second
        while not self._stop.wait(0.2):
            now = time.monotonic()
            try:
                if now >= next_renew:
                    next_renew = now + self._cfg.lease_s / 4
                    self._renew()
                if now >= next_take and not self._quiet.is_set():
                    next_take = now + TAKE_EVERY_S
                    self._take_and_share()
                if now >= next_beat:
                    next_beat = now + self._cfg.heartbeat_s
                    self._beat()
                if away:
                    away = False
                    log.info("cluster: shared store reachable again", extra={"event": Event.CLUSTER_BACK})
            except redis.RedisError as exc:  # Redis away: keep answering what we hold, try again
                if not away:
                    log.error("cluster: shared store unreachable: %s", exc, extra={"event": Event.CLUSTER_ERROR})
                away = True

    def _take_and_share(self) -> None:
        assert self._daemon is not None
        # Returned questions go to a worker with nothing waiting, so a busy one never takes back what a
        # sibling just gave away; a dead worker's go to any with room (no one may be idle for a while).
        # One at a time: a worker that took several would only hand the rest on again.
        if self._daemon.queue.depth() == 0:
            self._adopt(self._work.take_returned(1), "handed back")
        if self._has_room():
            self._adopt(self._work.take_dead(TAKE_AT_ONCE), f"silent for {self._cfg.lease_s:.0f}s")
        self._share_load()

    def _share_load(self) -> None:
        """While this worker is answering and others wait in its queue, give one to each idle sibling."""
        # The broker's shared subscription hands out uplinks round-robin, but every DM comes in several
        # copies and the first to arrive wins the claim, so one worker can win most: idle ones even it out.
        d = self._daemon
        assert d is not None
        held = self._ledger.held()
        if d.queue.depth() == 0 or len(held) < 2:
            return
        idle = [w for w in self._shared.workers() if w["worker"] != self._shared.worker_id and _idle(w)]
        given = []
        for _ in idle:
            query = d.queue.steal()
            if query is None:
                break
            if query.query_id not in held:  # accepted while Redis was away: only this worker has it
                d.queue.put(query)
                break
            given.append(query.query_id)
        if given:
            self._give_away(given, held)

    def _give_away(self, query_ids: list[int], held: dict[int, Held]) -> None:
        assert self._daemon is not None
        self._work.hand_back([held[q] for q in query_ids])
        for query_id in query_ids:
            self._ledger.give(query_id)  # fenced here, renewed until taken (a returned question never goes idle)
            self._daemon.store.set_state(query_id, QueryState.DROPPED, Reason.HANDED_TO_CLUSTER)
        log.info(
            "gave %d queued question(s) (%s) to idle workers",
            len(query_ids),
            ", ".join(f"q{q}" for q in query_ids),
            extra={"event": Event.HANDED_BACK, "count": len(query_ids), "query_ids": query_ids},
        )

    def _has_room(self) -> bool:
        # A worker with a long queue leaves the takeover to its siblings (what no one takes waits in Redis).
        assert self._daemon is not None
        return self._daemon.queue.depth() < max(self._daemon.cfg.queue.max_depth // 2, 1)

    def _renew(self) -> None:
        held, given = self._ledger.held(), self._ledger.given()
        lost = self._work.renew([*held.values(), *given.values()])
        for query_id, h in given.items():
            if h.entry in lost:
                self._ledger.taken(query_id)  # a sibling took it, as meant
        for query_id, h in held.items():
            if h.entry in lost:
                log.error(
                    "q%d: lease lost (this worker was silent too long); another worker answers it",
                    query_id,
                    extra={"event": Event.LEASE_LOST, "query_id": query_id},
                )
                self._ledger.lose(query_id)

    def _adopt(self, entries: list[str], why: str) -> None:
        for entry in entries:
            record = self._work.load(entry)
            if record is not None:
                self._take(record, why)

    def _take(self, record: Record, why: str) -> None:
        assert self._daemon is not None
        store, f = self._daemon.store, record.fields
        query_id = store.add_query(*_question(f), int(f["seed"]))
        for index, text in sorted(record.fragments.items()):
            store.add_fragment(query_id, index, text)
            if index in record.published:
                store.fragment_done(query_id, index, FragmentState.ACKED)  # on its way already: never again
        if record.generation_done:
            store.generation_finished(query_id)
            store.set_state(query_id, QueryState.SENDING)
        self._ledger.adopt(query_id, record.held)
        self.taken_over += 1
        # Routine when a sibling stops or shares its queue; worth a warning when a worker went silent.
        log.log(
            logging.INFO if why == "handed back" else logging.WARNING,
            "took over %s's question from %s as q%d (%s): %d of %d fragment(s) already sent",
            record.held.entry,
            node_id(int(f["sender"])),
            query_id,
            why,
            len(record.published),
            len(record.fragments),
            extra={"event": Event.TAKEN_OVER, "query_id": query_id, "entry": record.held.entry},
        )
        stored = store.get(query_id)
        if stored is not None:
            self._daemon.housekeeper.resume_one(stored, self._daemon.clock.now())

    def _beat(self) -> None:
        assert self._daemon is not None
        d = self._daemon
        hour = d.store.status()["last_hour"]
        self._shared.beat(
            {
                "answered_last_hour": hour["answered"],
                "failed_last_hour": hour["failed"],
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queue": d.queue.depth(),
                "holding": len(self._ledger.held()),
                "paused": d.paused.is_set(),
                "taken_over": self.taken_over,
                "at": time.time(),
            }
        )

    def quiesce(self, daemon: Daemon) -> None:
        """Shutting down: keep renewing what we hold (the reply in progress), take over nothing more."""
        self._quiet.set()

    def stop(self, daemon: Daemon) -> None:
        """Stop renewing; hand every question still held (queued or cut short) to the other workers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        held = self._ledger.held()
        try:
            self._work.hand_back(list(held.values()))
            self._shared.gone()
        except redis.RedisError as exc:
            log.error(
                "cluster: could not hand back %d question(s) (%s): they are taken over after the %.0fs lease",
                len(held),
                exc,
                self._cfg.lease_s,
                extra={"event": Event.CLUSTER_ERROR},
            )
        else:
            for query_id in held:
                daemon.store.set_state(query_id, QueryState.DROPPED, Reason.HANDED_TO_CLUSTER)
            log.info(
                "handed %d question(s) back to the other workers",
                len(held),
                extra={"event": Event.HANDED_BACK, "count": len(held)},
            )
        self._shared.close()


def _idle(worker: dict[str, Any]) -> bool:
    """A sibling's last heartbeat says it holds no question and is not paused."""
    return worker.get("holding", 1) == 0 and not worker.get("paused", False)


def _question(f: dict[str, str]) -> tuple[Inbound, Accept]:
    """The Inbound and Accept a taken-over question is stored with locally."""
    is_dm = f["is_dm"] == "1"
    question = f["question"]
    msg = Inbound(
        sender=int(f["sender"]),
        to=0 if is_dm else limits.BROADCAST_NUM,
        packet_id=int(f["packet_id"]),
        portnum="TEXT_MESSAGE_APP",
        text=question,
        payload_len=len(question.encode("utf-8")),
        channel=int(f["reply_channel"]),
        is_dm=is_dm,
        pki=is_dm and f.get("pki") == "1",
    )
    decision = Accept(Kind(f["kind"]), question, int(f["reply_to"]), int(f["reply_channel"]), f["want_ack"] == "1")
    return msg, decision
