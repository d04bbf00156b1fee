"""Intake: judge each packet (policy, then gate), then queue it, run a command, or log why not.

Runs on the daemon's intake thread; the radio's own thread only drops packets in the inbox. Questions go
through the join desk (service/joining.py), which holds the parts of a multi-part question; commands
(service/commands.py) and "more" spend their own allowance, never the asker's question allowance.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from meshbot.core import limits
from meshbot.core.aging import AgedSet
from meshbot.core.config import Config
from meshbot.core.domain import Clock, Inbound, KeyPins, Outbound
from meshbot.core.events import Event, Reason
from meshbot.core.fragmenter import labelled
from meshbot.core.gate import Admin, Gate, Refused, Spend, admin_command
from meshbot.core.ids import node_id, parse_node_id
from meshbot.core.metrics import NO_METRICS, Metrics, QuestionSeen
from meshbot.core.policy import Accept, Ignore, Kind, Policy
from meshbot.core.power import Mode
from meshbot.core.ratelimit import ChannelCooldown
from meshbot.core.trust import OncePerNode, is_legacy_dm
from meshbot.service.commands import CommandRequest, CommandTable
from meshbot.service.emergency import EmergencyLane
from meshbot.service.joining import JoinDesk
from meshbot.service.ledger import Ledger
from meshbot.service.observed import seen
from meshbot.service.queueing import Admission, Query, QueryQueue
from meshbot.service.sender import Sender, SendJob
from meshbot.storage.store import Store

# Nodes remembered as told "busy": a flood of distinct senders must not grow the set without end.
BUSY_TOLD_MAX = 1024
BUSY_TOLD_FOR_S = 3600.0

log = logging.getLogger(__name__)


class Intake:
    """Turns inbound packets into queued questions, admin actions, or logged refusals."""

    def __init__(
        self,
        cfg: Config,
        policy: Policy,
        gate: Gate,
        ledger: Ledger,
        query_queue: QueryQueue,
        sender: Sender,
        clock: Clock,
        paused: threading.Event,
        *,
        desk: JoinDesk,
        commands: CommandTable,
        emergency: EmergencyLane | None = None,
        power_mode: Callable[[], Mode] | None = None,
        metrics: Metrics = NO_METRICS,
        keys: KeyPins | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.policy = policy
        self.gate = gate
        self.ledger = ledger
        self.store: Store = ledger.store
        self.queue = query_queue
        self.sender = sender
        self.clock = clock
        self.paused = paused
        # Nodes told "busy" since their last accepted query: bounded, and told again after a quiet hour.
        self._busy_told = AgedSet(BUSY_TOLD_MAX, BUSY_TOLD_FOR_S)
        self.desk = desk
        self.commands = commands
        self._cooldown = ChannelCooldown()
        self.emergency = emergency
        self.power_mode = power_mode
        if emergency is not None:
            emergency.connect(
                sender,
                lambda msg, decision: self.ledger.accept(msg, decision, self.clock.now(), self.cfg.model.seed),
                self.enqueue,
                lambda text: self.commands.match(text) is not None or admin_command(text) is not None,
            )
        self.keys = keys  # the radio's key pins, for !rekey (None: the radio keeps none of its own)
        self._legacy_told = OncePerNode()

    def tick(self) -> None:
        """Queue the multi-part questions whose parts stopped arriving (called often by the intake loop)."""
        for query in self.desk.due():
            self.enqueue(query)
        if self.emergency is not None:
            self.emergency.tick()  # alerts held back by the once-a-minute rule

    def admit(self, msg: Inbound) -> None:
        """Judge one inbound packet: queue it, run an admin command, or log why not."""
        if is_legacy_dm(msg) and not self.cfg.radio.accept_legacy_dms:
            self._refuse_legacy(msg)
            return
        where = "DM" if msg.is_dm else f"ch{msg.channel}"
        log.info(
            "received %s from %s: %d B, %s hops, id %d",
            where,
            node_id(msg.sender),
            msg.payload_len,
            msg.hops if msg.hops is not None else "?",
            msg.packet_id,
            extra={
                "event": Event.RECEIVED,
                "from": node_id(msg.sender),
                "dm": msg.is_dm,
                "channel": msg.channel,
                "bytes": msg.payload_len,
                "packet_id": msg.packet_id,
            },
        )
        if msg.is_dm:
            self.sender.pacer.on_dm_received(self.clock.now())
        if self.emergency is not None and self.emergency.take(msg):
            self.tick()  # before policy and gate: no pause, rate limit, cooldown or power mode holds it
            return
        decision = self._judge(msg)
        if decision is None:
            return
        command = "more" if decision.kind is Kind.MORE else self.commands.match(decision.question)
        continuing = command is None and self.desk.waiting(msg)
        spend = Spend.COMMAND if command else Spend.NOTHING if continuing else Spend.QUESTION
        now = self.clock.now()
        if spend is Spend.QUESTION and not msg.is_dm and self._cooling(msg, now):
            return
        if spend is Spend.QUESTION and self._asleep(msg, decision, now):
            return
        verdict = self.gate.check(msg, decision, now, spend)
        if isinstance(verdict, Admin):
            self._admin(verdict, decision)
        elif isinstance(verdict, Refused):
            self._log_ignored(msg, verdict.reason)
            self.metrics.question(
                QuestionSeen("refused", msg.sender, msg.hops, 0.0, 0, decision.question, verdict.reason)
            )
            if verdict.notice:
                self._reply(decision, verdict.notice, "notice")
        elif command is not None:
            self._command(command, msg, decision)
        else:
            if spend is Spend.QUESTION and not msg.is_dm:
                self._cooldown.start(msg.channel, self.policy.cooldown_s(msg.channel), now)
            self._question(msg, decision)
        self.tick()

    def _refuse_legacy(self, msg: Inbound) -> None:
        """A text DM not PKI-encrypted: no reply, one line per node (a forger may send thousands)."""
        first = self._legacy_told.first(msg.sender)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "refused DM id %d from %s: %s (not PKI-encrypted, so anyone with the channel key could have sent it; "
            "further ones from this node are not logged)",
            msg.packet_id,
            node_id(msg.sender),
            Reason.LEGACY_DM,
            extra={"event": Event.IGNORED, "reason": Reason.LEGACY_DM, "from": node_id(msg.sender)},
        )

    def _judge(self, msg: Inbound) -> Accept | None:
        """Policy's decision; a channel message without the trigger still counts as a waiting question's part."""
        decision = self.policy.judge(msg)
        if isinstance(decision, Ignore):
            part = self.policy.as_part(msg) if decision.reason is Reason.NO_TRIGGER and self.desk.waiting(msg) else None
            if part is None:
                self._log_ignored(msg, decision.reason, decision.detail)
            return part
        return decision

    def _asleep(self, msg: Inbound, decision: Accept, now: float) -> bool:
        """Power mode sleep: a question gets the notice, is not queued and spends nothing (others pass on)."""
        if self.power_mode is None or self.power_mode() is not Mode.SLEEP:
            return False
        if self.gate.check(msg, decision, now, Spend.NOTHING) is not None:
            return False  # denied, a bot, an admin command: the usual path says what happens
        self._log_ignored(msg, Reason.ASLEEP, "low power")
        self._reply(decision, self.cfg.power.notice, "power notice", reply_id=msg.packet_id)
        return True

    def _cooling(self, msg: Inbound, now: float) -> bool:
        left = self._cooldown.remaining(msg.channel, now)
        if left > 0:
            self._log_ignored(msg, Reason.CHANNEL_COOLDOWN, f"{left:.0f}s left on channel {msg.channel}")
        return left > 0

    def _question(self, msg: Inbound, decision: Accept) -> None:
        if decision.cut_bytes:
            log.warning(
                "input from %s cut by %d B to max_input_bytes=%d",
                node_id(msg.sender),
                decision.cut_bytes,
                self.cfg.policy.max_input_bytes,
                extra={"event": Event.INPUT_CUT},
            )
        query = self.desk.offer(msg, decision)
        if query is not None:
            self.enqueue(query)

    def _command(self, name: str, msg: Inbound, decision: Accept) -> None:
        if name == "more":
            # Answered by the worker from the stored remainder, in order after the answer it continues.
            more = dataclasses.replace(decision, kind=Kind.MORE)
            self.enqueue(self.ledger.accept(msg, more, self.clock.now(), self.cfg.model.seed))
            return
        text = self.commands.run(CommandRequest(name, msg, decision))
        log.info(
            "command %s from %s: %s",
            name,
            node_id(msg.sender),
            text,
            extra={"event": Event.COMMAND, "command": name, "packet_id": msg.packet_id},
        )
        self._reply(decision, text, f"command {name}", reply_id=msg.packet_id)

    def _log_ignored(self, msg: Inbound, reason: str, detail: str = "") -> None:
        log.info(
            "ignored id %d from %s: %s%s",
            msg.packet_id,
            node_id(msg.sender),
            reason,
            f" ({detail})" if detail else "",
            extra={"event": Event.IGNORED, "reason": reason, "packet_id": msg.packet_id},
        )

    def enqueue(self, query: Query) -> None:
        """Put an accepted question in the queue, or drop it (and say busy once) when full."""
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
                extra={"event": Event.QUEUED, "query_id": query.query_id, "depth": self.queue.depth()},
            )
            return
        self.ledger.dropped(query.query_id, admission.value)
        self.metrics.question(seen(query, "dropped", self.clock.now(), reason=admission.value))
        log.warning(
            "dropped q%d from %s: %s (depth %d)",
            query.query_id,
            node_id(node),
            admission.value,
            self.queue.depth(),
            extra={"event": Event.DROPPED, "reason": admission.value},
        )
        if self._busy_told.first_time(node, self.clock.now()):
            self._reply(query.decision, self.cfg.queue.busy_message, "busy")

    def _reply(self, decision: Accept, text: str, label: str, reply_id: int | None = None) -> None:
        dm = decision.reply_to != limits.BROADCAST_NUM
        ceiling = limits.MAX_TEXT_BYTES_DM_WITH_REPLY_ID if dm else limits.MAX_TEXT_BYTES_CHANNEL_WITH_REPLY_ID
        text = labelled(text, self.cfg.mesh.ai_tag, min(self.cfg.mesh.max_fragment_bytes, ceiling))
        out = Outbound(text, decision.reply_to, decision.reply_channel, decision.want_ack, reply_id=reply_id)
        self.sender.submit(SendJob(out, label))

    def _admin(self, command: Admin, decision: Accept) -> None:
        if command is Admin.REKEY:
            text = self._rekey(decision.question.split()[-1])
        elif command is Admin.PAUSE:
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
            extra={"event": Event.ADMIN, "command": command.value},
        )
        self._reply(decision, text, f"admin {command.value}")

    def _rekey(self, target: str) -> str:
        try:
            node = parse_node_id(target)
        except ValueError:
            return f"!rekey needs a node id like !a1b2c3d4, not {target[:12]}"
        if self.keys is None:
            # The node's firmware pins keys itself (NodeDB): removing the node there lets its next key in.
            return f"The radio's node pins keys: remove {node_id(node)} there (meshtastic --remove-node)."
        if not self.keys.forget_key(node):
            return f"No key pinned for {node_id(node)}."
        return f"Key of {node_id(node)} forgotten: its next NodeInfo is pinned."

    def _stats_text(self) -> str:
        status = self.store.status()
        hour = status["last_hour"]
        # The store's count: a question the worker holds during a pause is still waiting.
        return (
            f"queue {status['queue_depth']}, last hour: {hour['answered']} answered, {hour['failed']} failed, "
            f"{hour['dropped']} dropped; air {status['airtime_last_hour_s']:.0f}s"
            f"{', paused' if self.paused.is_set() else ''}"
        )
