"""The daemon's lifecycle: start-up, then intake → one model worker → one sender, then shutdown.

Threads: the radio library's publish thread only drops packets into `_inbox`; the intake thread
judges, records and queues them; the worker runs the model; the sender owns the radio's send path.
"""

from __future__ import annotations

import logging
import queue
import threading

from meshbot.core.airtime import preset
from meshbot.core.config import Config
from meshbot.core.domain import Clock, Inbound, Model, Outbound, Radio, RadioEvent
from meshbot.core.gate import Admin, Gate, Refused
from meshbot.core.ids import node_id
from meshbot.core.pacing import Pacer, hourly_budget_s, region_limit_s
from meshbot.core.policy import Accept, Ignore, Policy
from meshbot.service.ledger import Ledger
from meshbot.service.queueing import Admission, FairQueue, Query, QueryQueue
from meshbot.service.resume import Housekeeper
from meshbot.service.sender import Sender, SendJob
from meshbot.service.worker import Worker
from meshbot.storage.store import Store

log = logging.getLogger(__name__)

_POLL_S = 0.25  # how often idle threads look at the stop flag


class Daemon:
    """Wires radio, policy, gate, store, queue, worker and sender together and runs them."""

    def __init__(
        self,
        cfg: Config,
        radio: Radio,
        model: Model,
        clock: Clock,
        store: Store | None = None,
        query_queue: QueryQueue | None = None,
    ) -> None:
        self.cfg = cfg
        self.radio = radio
        self.model = model
        self.clock = clock
        self.store = store or Store(":memory:")
        self.ledger = Ledger(self.store)
        self.queue: QueryQueue = query_queue or FairQueue(cfg.queue.max_depth, cfg.queue.max_per_node)
        self.gate = Gate(cfg.limits, self.store.recent_text_seen)
        self.radio_up = threading.Event()
        self.paused = threading.Event()
        self._inbox: queue.Queue[Inbound | RadioEvent] = queue.Queue()
        self._stop = threading.Event()
        self._busy_told: set[int] = set()  # nodes told "busy" since their last accepted query
        self._threads: list[threading.Thread] = []
        self._working = threading.Event()  # set while the worker handles a query
        self.policy: Policy | None = None
        self.sender: Sender | None = None
        self.worker: Worker | None = None
        self.housekeeper: Housekeeper | None = None

    # -- start-up -----------------------------------------------------------------------------
    def start(self) -> None:
        """Connect the radio, resume what a previous run left, start the threads."""
        self.radio.start(self._on_packet, self._on_event)
        self.radio_up.set()
        self.store.record_event("radio-up")
        node = self.radio.local_node()
        pacer = Pacer(
            preset(node.modem_preset),
            self.cfg.mesh.min_gap_s,
            hourly_budget_s(node.region, self.cfg.mesh.airtime_budget_percent),
            region_limit_s(node.region),
        )
        self.policy = Policy(self.cfg.policy, node.node_num, node.short_name, self.store.mark_seen)
        self.sender = Sender(self.radio, pacer, self.clock, self.cfg.mesh, self.radio_up, self.store)
        self.worker = Worker(self.cfg, self.model, self.sender, pacer, self.clock, self.ledger)
        self.housekeeper = Housekeeper(self.cfg, self.store, self.ledger, self.sender, self.queue)
        self.sender.start()
        self.housekeeper.resume(self.clock.now())
        for name, target in (("intake", self._intake_loop), ("worker", self._worker_loop)):
            thread = threading.Thread(target=target, name=f"meshbot-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "meshbot up as %s (%s) on %s/%s: %.0fs air time per hour allowed, model %s",
            node_id(node.node_num),
            self.policy.short_name,
            node.region,
            node.modem_preset,
            pacer.budget_s,
            self.model.name,
            extra={"event": "started"},
        )

    # -- radio callbacks (the library's publish thread: hand off, nothing else) -------------
    def _on_packet(self, msg: Inbound) -> None:
        self._inbox.put(msg)

    def _on_event(self, event: RadioEvent) -> None:
        # The flag is set here, not in the intake, so the sender stops trying at once.
        (self.radio_up.set if event is RadioEvent.CONNECTED else self.radio_up.clear)()
        self._inbox.put(event)

    # -- intake ---------------------------------------------------------------------------------
    def _intake_loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._inbox.get(timeout=_POLL_S)
            except queue.Empty:
                self._housekeep()
                continue
            try:
                if isinstance(item, RadioEvent):
                    log.info("radio %s", item.value, extra={"event": f"radio-{item.value}"})
                    self.store.record_event("radio-up" if item is RadioEvent.CONNECTED else "radio-down")
                else:
                    self.admit(item)
            except Exception:  # one bad packet must never stop the intake
                log.exception("intake failed on %r", item)
            finally:
                self._inbox.task_done()

    def _housekeep(self) -> None:
        if self.housekeeper is not None:
            try:
                self.housekeeper.tick(self.clock.now())
            except Exception:  # housekeeping may fail (disk full); answering goes on
                log.exception("housekeeping failed")

    def admit(self, msg: Inbound) -> None:
        """Judge one inbound packet: queue it, run an admin command, or log why not."""
        assert self.policy is not None
        where = "DM" if msg.is_dm else f"ch{msg.channel}"
        log.info(
            "received %s from %s: %d B, %s hops, id %d",
            where,
            node_id(msg.sender),
            msg.payload_len,
            msg.hops if msg.hops is not None else "?",
            msg.packet_id,
            extra={
                "event": "received",
                "from": node_id(msg.sender),
                "dm": msg.is_dm,
                "channel": msg.channel,
                "bytes": msg.payload_len,
                "packet_id": msg.packet_id,
            },
        )
        if msg.is_dm and self.sender is not None:
            self.sender.pacer.on_dm_received(self.clock.now())
        decision = self.policy.judge(msg)
        if isinstance(decision, Ignore):
            self._log_ignored(msg, decision.reason)
            return
        verdict = self.gate.check(msg, decision, self.clock.now())
        if isinstance(verdict, Admin):
            self._admin(verdict, decision)
        elif isinstance(verdict, Refused):
            self._log_ignored(msg, verdict.reason)
            if verdict.notice:
                self._reply(decision, verdict.notice, "notice")
        else:
            if decision.cut_bytes:
                log.warning(
                    "input from %s cut by %d B to max_input_bytes=%d",
                    node_id(msg.sender),
                    decision.cut_bytes,
                    self.cfg.policy.max_input_bytes,
                    extra={"event": "input-cut"},
                )
            self._enqueue(self.ledger.accept(msg, decision, self.clock.now(), self.cfg.model.seed))

    def _log_ignored(self, msg: Inbound, reason: str) -> None:
        log.info(
            "ignored id %d from %s: %s",
            msg.packet_id,
            node_id(msg.sender),
            reason,
            extra={"event": "ignored", "reason": reason, "packet_id": msg.packet_id},
        )

    def _enqueue(self, query: Query) -> None:
        admission = self.queue.put(query)
        node = query.node
        if admission is Admission.ACCEPTED:
            self._busy_told.discard(node)
            log.info(
                "queued q%d (%s) from %s: depth %d",
                query.query_id,
                query.decision.kind.value,
                node_id(node),
                self.queue.depth(),
                extra={"event": "queued", "query_id": query.query_id, "depth": self.queue.depth()},
            )
            return
        self.ledger.dropped(query.query_id, admission.value)
        log.warning(
            "dropped q%d from %s: %s (depth %d)",
            query.query_id,
            node_id(node),
            admission.value,
            self.queue.depth(),
            extra={"event": "dropped", "reason": admission.value},
        )
        if node not in self._busy_told:
            self._busy_told.add(node)
            self._reply(query.decision, self.cfg.queue.busy_message, "busy")

    def _reply(self, decision: Accept, text: str, label: str) -> None:
        assert self.sender is not None
        out = Outbound(text, decision.reply_to, decision.reply_channel, decision.want_ack)
        self.sender.submit(SendJob(out, label))

    def _admin(self, command: Admin, decision: Accept) -> None:
        if command is Admin.PAUSE:
            self.paused.set()
            text = "Paused: questions are kept and answered after !resume."
        elif command is Admin.RESUME:
            self.paused.clear()
            text = "Resumed."
        else:
            text = self._stats_text()
        log.warning(
            "admin %s from %s: %s",
            command.value,
            node_id(decision.reply_to),
            text,
            extra={"event": "admin", "command": command.value},
        )
        self._reply(decision, text, f"admin {command.value}")

    def _stats_text(self) -> str:
        status = self.store.status()
        hour = status["last_hour"]
        # The store's count: a question the worker holds during a pause is still waiting.
        return (
            f"queue {status['queue_depth']}, last hour: {hour['answered']} answered, {hour['failed']} failed, "
            f"{hour['dropped']} dropped; air {status['airtime_last_hour_s']:.0f}s"
            f"{', paused' if self.paused.is_set() else ''}"
        )

    # -- worker -----------------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        assert self.worker is not None
        assert self.sender is not None
        while not self._stop.is_set():
            # Paused: queries stay queued (and stored). Backpressure: while the sender still has
            # more than one answer's worth to send, new questions wait in the fair, bounded queue
            # (which says "busy" when full) instead of piling up as stale answers behind it.
            if self.paused.is_set() or self.sender.backlog() > self.cfg.mesh.max_fragments:
                self._stop.wait(_POLL_S)
                continue
            query = self.queue.get(timeout=_POLL_S)
            if query is None:
                continue
            self._working.set()  # held or answered, it is not idle
            # A pause may land while we waited in get(): hold this one until resumed.
            while self.paused.is_set() and not self._stop.is_set():
                self._stop.wait(_POLL_S)
            if self._stop.is_set():
                self._working.clear()
                return  # still stored as queued: the next start answers it
            try:
                worker = self.worker
                # On the model's own thread: tidying and fragmenting run between its tokens.
                self.model.run(lambda: worker.handle(query))
            except Exception as exc:  # a model failure loses this answer, never the daemon
                log.exception("worker failed on q%d", query.query_id)
                self.ledger.failed(query.query_id, f"worker error: {exc}")
            finally:
                self._working.clear()

    # -- observation and shutdown -------------------------------------------------------------
    def idle(self) -> bool:
        """True when nothing is waiting, generating or being sent."""
        return (
            self._inbox.unfinished_tasks == 0
            and self.queue.depth() == 0
            and not self._working.is_set()
            and (self.sender is None or self.sender.idle())
        )

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop taking packets, let the reply in progress finish within `grace_s`, close the radio."""
        log.info(
            "shutting down: %d queued, reply in progress: %s",
            self.queue.depth(),
            self._working.is_set(),
            extra={"event": "stopping"},
        )
        self._stop.set()
        self.queue.close()
        deadline = self.clock.now() + grace_s
        for thread in self._threads:
            thread.join(max(deadline - self.clock.now(), 0.1))
            if thread.is_alive() and self.worker is not None:
                self.worker.abandon.set()
                thread.join(2.0)
        if self.sender is not None:
            self.sender.stop(drain_s=max(deadline - self.clock.now(), 1.0))
        self.radio.close()
        self.store.close()
        log.info("stopped; unfinished queries stay stored for the next start", extra={"event": "stopped"})
