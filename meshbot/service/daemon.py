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
from collections.abc import Callable, Sequence
from typing import Protocol

from meshbot.core.airtime import preset
from meshbot.core.config import Config
from meshbot.core.domain import Clock, Inbound, KeyPins, LocalNode, Model, NodeDirectory, Radio, RadioEvent
from meshbot.core.events import Event, Reason
from meshbot.core.gate import Gate
from meshbot.core.ids import node_id
from meshbot.core.metrics import NO_METRICS, Metrics
from meshbot.core.pacing import Pacer, hourly_budget_s, region_limit_s
from meshbot.core.policy import Policy
from meshbot.core.power import Mode
from meshbot.service.commands import CommandHooks, StandardCommands
from meshbot.service.context import Contexts
from meshbot.service.emergency import EmergencyLane
from meshbot.service.holdback import Holdback
from meshbot.service.intake import Intake
from meshbot.service.joining import JoinDesk
from meshbot.service.ledger import Ledger
from meshbot.service.observed import seen
from meshbot.service.power import PowerMonitor
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
        self.listeners: list[Callable[[RadioEvent], None]] = []  # told of link events at once, on the radio's thread

    def put_packet(self, msg: Inbound) -> None:
        """The radio's packet callback: hand off, nothing else (it runs on the radio's thread)."""
        self.items.put(msg)

    def put_event(self, event: RadioEvent) -> None:
        """The radio's link callback; the flag is set here so the sender stops trying at once."""
        (self.radio_up.set if event is RadioEvent.CONNECTED else self.radio_up.clear)()
        for listener in self.listeners:
            listener(event)
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
        directory: NodeDirectory | None = None,
        emergency: EmergencyLane | None = None,
        power: PowerMonitor | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.metrics = metrics
        self.cfg, self.radio, self.model, self.clock, self.store, self.node = cfg, radio, model, clock, store, node
        self.directory = directory  # what the bot knows about its mesh (None: no directory)
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
        self.sender = Sender(
            radio,
            self.pacer,
            clock,
            cfg.mesh,
            inbox.radio_up,
            store,
            self.ledger.published,
            holdback=Holdback(store, cfg.mesh.ai_tag),
            metrics=metrics,
        )
        inbox.listeners.append(self.sender.on_radio_event)  # a reconnect cuts an ACK wait short
        self.contexts = contexts or Contexts()
        self.power = power
        self.worker = Worker(
            cfg, model, self.sender, self.pacer, clock, self.ledger, self.contexts, power, metrics=metrics
        )
        self.housekeeper = Housekeeper(
            cfg,
            store,
            self.ledger,
            self.sender,
            self.queue,
            model.deterministic,
            is_emergency=emergency.has_word if emergency is not None else None,
            alike=self.contexts.regenerates_alike,
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
            directory=directory,
            mesh_source=hooks.mesh_source,
            power_line=power.status_line if power is not None else None,
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
            emergency=emergency,
            power_mode=power.mode if power is not None else None,
            metrics=metrics,
            keys=radio if isinstance(radio, KeyPins) else None,
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
        self._record_radio_up()
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

    def _record_radio_up(self) -> None:
        """The link is up; what keeps the node from serving (its settings, read at connect) goes with it."""
        self.store.record_event("radio-up")
        try:
            problems = self.radio.local_node().problems()
        except Exception:  # the link went again already: the next connect records it
            problems = ()
        for code in problems:
            self.store.record_event(f"radio-{code}")

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
                    if item is RadioEvent.CONNECTED:
                        self._record_radio_up()
                    else:
                        self.store.record_event("radio-down")
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
            # Paused or asleep: queries stay queued (and stored). Backpressure: while the sender still has
            # more than one answer's worth to send, new questions wait in the fair, bounded queue
            # (which says "busy" when full) instead of piling up as stale answers behind it.
            # An emergency's answer goes through all three.
            held = self.paused.is_set() or self.sender.backlog() > self.cfg.mesh.max_fragments or self._asleep()
            query = self.queue.get(timeout=_POLL_S, urgent_only=held)
            if query is not None:
                self._answer(query)

    def _answer(self, query: Query) -> None:
        self._working.set()  # held or answered, it is not idle
        try:
            # A pause may land while we waited in get(): hold this one until resumed. An emergency goes on,
            # and one that arrives meanwhile is answered while this one waits.
            while self.paused.is_set() and not query.emergency and not self._stop.is_set():
                urgent = self.queue.get(timeout=_POLL_S, urgent_only=True)
                if urgent is not None:
                    self._generate(urgent)
            if self._stop.is_set():
                return  # still stored as queued: the next start answers it
            self._generate(query)
        finally:
            self._working.clear()

    def _generate(self, query: Query) -> None:
        try:
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
            self.metrics.question(seen(query, "failed", self.clock.now(), reason=Reason.WORKER_ERROR))

    def _asleep(self) -> bool:
        return self.power is not None and self.power.mode() is Mode.SLEEP

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
