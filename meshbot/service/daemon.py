"""The daemon's lifecycle: start-up, then intake → one model worker → one sender, then shutdown.

Threads: the radio's own thread only drops packets into the `Inbox`; the intake thread judges, records
and queues them; the worker runs the model; the sender owns the radio's send path. `app.compose`
builds a Daemon whole (its radio already connected); `start()` and `stop()` are all that is left.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from meshbot.core.airtime import preset
from meshbot.core.config import Config
from meshbot.core.domain import Clock, Inbound, LocalNode, Model, Radio, RadioEvent
from meshbot.core.events import Event, Reason
from meshbot.core.gate import Gate
from meshbot.core.ids import node_id
from meshbot.core.pacing import Pacer, hourly_budget_s, region_limit_s
from meshbot.core.policy import Policy
from meshbot.service.commands import CommandHooks, StandardCommands
from meshbot.service.context import Contexts
from meshbot.service.intake import Intake
from meshbot.service.joining import JoinDesk
from meshbot.service.ledger import Ledger
from meshbot.service.queueing import FairQueue, Query, QueryQueue
from meshbot.service.resume import Housekeeper
from meshbot.service.sender import Sender
from meshbot.service.worker import Worker
from meshbot.storage.store import Store

log = logging.getLogger(__name__)

_POLL_S = 0.25  # how often idle threads look at the stop flag
_ABANDON_WAIT_S = 1.0  # a reply told to stop mid-generation returns at its next token
HEARTBEAT_EVERY_S = 5.0  # `meshbot status` calls a daemon stopped when its heartbeat is 3 of these old


class Companion(Protocol):
    """Something that runs alongside the daemon (the cluster custodian): started first, stopped last."""

    def start(self, daemon: Daemon) -> None:
        """Before the daemon resumes its own leftovers and starts its threads."""

    def quiesce(self, daemon: Daemon) -> None:
        """The daemon begins to stop: take on no new work."""

    def stop(self, daemon: Daemon) -> None:
        """After the daemon's threads and sender stopped, before the store closes."""


class Inbox:
    """Where the radio's thread hands packets and link events: built before the radio connects."""

    def __init__(self) -> None:
        self.items: queue.Queue[Inbound | RadioEvent] = queue.Queue()
        self.radio_up = threading.Event()

    def put_packet(self, msg: Inbound) -> None:
        """The radio's packet callback: hand off, nothing else (it runs on the radio's thread)."""
        self.items.put(msg)

    def put_event(self, event: RadioEvent) -> None:
        """The radio's link callback; the flag is set here so the sender stops trying at once."""
        (self.radio_up.set if event is RadioEvent.CONNECTED else self.radio_up.clear)()
        self.items.put(event)


class Daemon:
    """Runs policy, gate, store, queue, worker and sender on a connected radio."""

    def __init__(
        self,
        cfg: Config,
        *,
        radio: Radio,
        model: Model,
        clock: Clock,
        store: Store,
        node: LocalNode,
        inbox: Inbox,
        contexts: Contexts | None = None,
        query_queue: QueryQueue | None = None,
        hooks: CommandHooks | None = None,
        ledger: Ledger | None = None,
        companions: Sequence[Companion] = (),
    ) -> None:
        self.cfg, self.radio, self.model, self.clock, self.store, self.node = cfg, radio, model, clock, store, node
        self.inbox = inbox
        self.radio_up = inbox.radio_up
        self.paused = threading.Event()
        self.ledger = ledger or Ledger(store)
        self.companions = tuple(companions)
        self.queue: QueryQueue = query_queue or FairQueue(cfg.queue.max_depth, cfg.queue.max_per_node)
        self.pacer = Pacer(
            preset(node.modem_preset),
            cfg.mesh.min_gap_s,
            hourly_budget_s(node.region, cfg.mesh.airtime_budget_percent),
            region_limit_s(node.region),
        )
        self.policy = Policy(cfg.policy, node.node_num, node.short_name, store.mark_seen, node.public_channels)
        self.sender = Sender(radio, self.pacer, clock, cfg.mesh, inbox.radio_up, store, self.ledger.published)
        self.contexts = contexts or Contexts()
        self.worker = Worker(cfg, model, self.sender, self.pacer, clock, self.ledger, self.contexts)
        self.housekeeper = Housekeeper(
            cfg, store, self.ledger, self.sender, self.queue, model.deterministic, self.contexts.regenerates_alike
        )
        gate = Gate(
            cfg.limits,
            store.recent_text_seen,
            bot_tags=(cfg.mesh.ai_tag, "🤖"),
            command_rate=(cfg.commands.per_node_burst, cfg.commands.per_node_per_hour),
        )
        hooks = hooks or CommandHooks()
        commands = StandardCommands(
            cfg,
            clock=clock,
            model_name=model.name,
            queue_depth=self.queue.depth,
            forget=hooks.forget,
            last_source=hooks.last_source,
        )
        self.intake = Intake(
            cfg,
            self.policy,
            gate,
            self.ledger,
            self.queue,
            self.sender,
            clock,
            self.paused,
            desk=JoinDesk(cfg.join, self.ledger, clock, cfg.model.seed),
            commands=commands.table(),
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._working = threading.Event()  # set while the worker handles a query
        self._next_beat = 0.0

    def admit(self, msg: Inbound) -> None:
        """Judge one inbound packet now, on the caller's thread (tests and tools)."""
        self.intake.admit(msg)

    # -- start-up -----------------------------------------------------------------------------
    def start(self) -> None:
        """Resume what a previous run left, then start the threads."""
        self.store.record_event("radio-up")
        self._beat()
        self.sender.start()
        for companion in self.companions:
            companion.start(self)
        self.housekeeper.resume(self.clock.now())
        for query in self.intake.desk.restore(self.store.joining()):
            self.intake.enqueue(query)
        for name, target in (("intake", self._intake_loop), ("worker", self._worker_loop)):
            thread = threading.Thread(target=target, name=f"meshbot-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        node = self.node
        log.info(
            "meshbot up as %s (%s) on %s/%s: %.0fs air time per hour allowed, model %s",
            node_id(node.node_num),
            self.policy.short_name,
            node.region,
            node.modem_preset,
            self.pacer.budget_s,
            self.model.name,
            extra={"event": Event.STARTED},
        )

    # -- intake ---------------------------------------------------------------------------------
    def _intake_loop(self) -> None:
        items = self.inbox.items
        while not self._stop.is_set():
            try:
                item = items.get(timeout=_POLL_S)
            except queue.Empty:
                self._tick()
                self._housekeep()
                continue
            try:
                if isinstance(item, RadioEvent):
                    # The radio logs the transition; the store keeps it for `meshbot status`.
                    self.store.record_event("radio-up" if item is RadioEvent.CONNECTED else "radio-down")
                else:
                    self.intake.admit(item)
            except Exception:  # one bad packet must never stop the intake
                log.exception("intake failed on %r", item)
            finally:
                self._tick()
                items.task_done()
            if self.clock.now() >= self._next_beat:
                self._housekeep()

    def _tick(self) -> None:
        try:
            self.intake.tick()  # multi-part questions whose parts stopped arriving
        except Exception:  # the parts stay stored (JOINING) and are held again at the next start
            log.exception("joining failed")

    def _housekeep(self) -> None:
        try:
            self.housekeeper.tick(self.clock.now())
            if self.clock.now() >= self._next_beat:
                self._beat()
        except Exception:  # housekeeping may fail (disk full); answering goes on
            log.exception("housekeeping failed")

    def _beat(self) -> None:
        self._next_beat = self.clock.now() + HEARTBEAT_EVERY_S
        self.store.heartbeat(os.getpid(), self.queue.depth(), self.paused.is_set())

    # -- worker -----------------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            # Paused: queries stay queued (and stored). Backpressure: while the sender still has
            # more than one answer's worth to send, new questions wait in the fair, bounded queue
            # (which says "busy" when full) instead of piling up as stale answers behind it.
            if self.paused.is_set() or self.sender.backlog() > self.cfg.mesh.max_fragments:
                self._stop.wait(_POLL_S)
                continue
            query = self.queue.get(timeout=_POLL_S)
            if query is not None:
                self._answer(query)

    def _answer(self, query: Query) -> None:
        self._working.set()  # held or answered, it is not idle
        try:
            # A pause may land while we waited in get(): hold this one until resumed.
            while self.paused.is_set() and not self._stop.is_set():
                self._stop.wait(_POLL_S)
            if self._stop.is_set():
                return  # still stored as queued: the next start answers it
            # Where the backend computes best (llama.cpp: its engine thread), so tidying and
            # fragmenting run between its tokens without a hand-over per token.
            self.model.run(lambda: self.worker.handle(query))
        except Exception as exc:  # a model failure loses this answer, never the daemon
            log.exception(
                "worker failed on q%d: %s",
                query.query_id,
                exc,
                extra={"event": Event.FAILED, "reason": Reason.WORKER_ERROR, "query_id": query.query_id},
            )
            self.ledger.failed(query.query_id, Reason.WORKER_ERROR)
        finally:
            self._working.clear()

    # -- observation and shutdown -------------------------------------------------------------
    def idle(self) -> bool:
        """True when nothing is waiting, generating or being sent."""
        return (
            self.inbox.items.unfinished_tasks == 0
            and self.intake.desk.pending() == 0
            and self.queue.depth() == 0
            and not self._working.is_set()
            and self.sender.idle()
        )

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop taking packets; the reply in progress gets `grace_s` real seconds, then what is left stays stored.

        The whole stop takes about `grace_s` plus a second: a reply still generating at the deadline is
        abandoned, fragments not yet on air are left for the next start, and the radio closes promptly.
        """
        log.info(
            "shutting down: %d queued, reply in progress: %s",
            self.queue.depth(),
            self._working.is_set(),
            extra={"event": Event.STOPPING},
        )
        # Real time, whatever the daemon's clock: the grace is a promise to systemd and docker (10 s to SIGKILL).
        deadline = time.monotonic() + grace_s
        self._stop.set()
        self.worker.stopping.set()  # a question waiting for an absent model server stays stored
        for companion in self.companions:
            companion.quiesce(self)
        self.queue.close()
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
            if thread.is_alive():
                self.worker.abandon.set()  # the worker logs what it abandons
                thread.join(_ABANDON_WAIT_S)
        self.sender.stop(drain_s=max(deadline - time.monotonic(), 0.0))
        self.radio.close()
        for companion in self.companions:
            companion.stop(self)
        self.contexts.close()
        self.store.stopped(os.getpid())
        self.store.close()
        log.info("stopped; unfinished queries stay stored for the next start", extra={"event": Event.STOPPED})
