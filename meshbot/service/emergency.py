"""The emergency lane: a text with an emergency word gets through whatever else holds the bot.

It is looked at before policy and gate, in a DM or on any channel the bot hears (the public one too, with or
without the trigger), while paused, rate-limited, cooling down or asleep. What follows, in this order:
1. one reply fragment to the sender (on the channel it came on), sent before every text that is not urgent;
2. an alert to `[emergency] notify_nodes` (DMs, ACKed and retried) and `notify_channel`: who, how heard, where,
   what they said; a node's further emergencies within a window alert again at most once a minute;
3. a model answer, first in the queue, with emergency or first-aid notes preferred.
For `[emergency] follow_up_s` after an emergency, the same node's texts in the same place (its DMs, or that
channel) are follow-ups: alerted and answered the same way, without the reply fragment.
Texts of other bots and denied nodes never count (an allow list does not apply), nor, when
`[emergency] require_proof` is set, those of an unproven sender.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from meshbot.core import limits
from meshbot.core.config import Config
from meshbot.core.domain import Clock, Inbound, LocalNode, Outbound
from meshbot.core.emergency import (
    AlertFacts,
    AlertThrottle,
    EmergencyWords,
    Position,
    PositionSource,
    alert_text,
    sender_proven,
)
from meshbot.core.events import Event
from meshbot.core.fragmenter import fragment, labelled
from meshbot.core.gate import is_bot_text
from meshbot.core.ids import node_id, parse_node_id
from meshbot.core.policy import TEXT_PORT, Accept, Kind, cut_to_bytes
from meshbot.core.prompting import clean_name
from meshbot.service.queueing import Query
from meshbot.service.sender import Sender, SendJob

log = logging.getLogger(__name__)

# What `spot` says of a text that has no emergency word but follows one from the same node, in the same place.
FOLLOW_UP = "(follow-up)"
# An alert longer than one fragment is split; the quoted text is at most max_input_bytes, so this is room enough.
ALERT_MAX_FRAGMENTS = 4


def _episode(msg: Inbound) -> tuple[int, int | None]:
    return msg.sender, None if msg.is_dm else msg.channel


class EmergencyLane:
    """Spots emergencies and sends the reply and the alerts; queues the answer through the intake."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock,
        node: LocalNode,
        is_new: Callable[[int, int], bool],
        positions: PositionSource | None = None,
        short_name_of: Callable[[int], str | None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._ecfg = cfg.emergency
        self._words = EmergencyWords(self._ecfg.words if self._ecfg.enabled else ())
        self._clock = clock
        self._node = node
        self._is_new = is_new
        self._positions = positions
        self._short_name_of = short_name_of
        self._wall = wall
        self._throttle = AlertThrottle(self._ecfg.realert_window_s, self._ecfg.realert_every_s)
        self._notify = tuple(parse_node_id(n) for n in self._ecfg.notify_nodes)
        # Other bots never count; a node the operator denied neither. An allow list does not apply: anyone in
        # trouble counts, whether or not they may ask the bot questions.
        self._ignored = frozenset(parse_node_id(n) for n in (*cfg.limits.bots, *cfg.limits.deny))
        self._tags = tuple(t.strip() for t in (cfg.mesh.ai_tag, "🤖") if t.strip())
        self._heard: dict[int, Inbound] = {}  # each node's latest emergency packet, for a held alert
        self._open: dict[tuple[int, int | None], float] = {}  # (node, channel or None for DMs): follow-ups until
        self._sender: Sender | None = None
        self._accept: Callable[[Inbound, Accept], Query] | None = None
        self._enqueue: Callable[[Query], None] | None = None
        self._is_command: Callable[[str], bool] = lambda text: False
        self.heard_count = 0

    def connect(
        self,
        sender: Sender,
        accept: Callable[[Inbound, Accept], Query],
        enqueue: Callable[[Query], None],
        is_command: Callable[[str], bool],
    ) -> None:
        """The daemon's parts the lane sends and queues through (built after the lane)."""
        self._sender, self._accept, self._enqueue, self._is_command = sender, accept, enqueue, is_command

    # -- spotting -------------------------------------------------------------------------------
    def has_word(self, text: str) -> bool:
        """True when `text` holds an emergency word (a question resumed after a restart goes first again)."""
        return self._words.match(text) is not None

    def spot(self, msg: Inbound) -> str | None:
        """The emergency word `msg` carries if it counts as an emergency (FOLLOW_UP for a follow-up), else None."""
        if msg.portnum != TEXT_PORT or msg.text is None or msg.emoji or msg.sender == self._node.node_num:
            return None
        if not msg.is_dm and msg.to != limits.BROADCAST_NUM:
            return None
        word = self._words.match(msg.text)
        if word is None and self._open.get(_episode(msg), float("-inf")) > self._clock.now():
            word = FOLLOW_UP  # where they are, what happened: the helpers need it as much as the first text
        if word is None or self._command(msg.text) or not msg.text.strip():
            return None
        if msg.sender in self._ignored or is_bot_text(msg.text.strip(), self._tags):
            return None
        if self._ecfg.require_proof and not sender_proven(msg):
            log.info(
                "not an emergency: %s is not proven (require_proof)",
                node_id(msg.sender),
                extra={"event": Event.IGNORED, "reason": "unproven", "packet_id": msg.packet_id},
            )
            return None
        return word

    def _command(self, text: str) -> bool:
        """`!help` stays a command, in a DM or after a channel trigger (`!ai !help`)."""
        words = text.strip().split(None, 1)
        return self._is_command(text) or (len(words) == 2 and self._is_command(words[1]))

    def take(self, msg: Inbound) -> bool:
        """Handle `msg` if it is a new emergency: reply, alert, queue the answer. False: not one for the lane."""
        word = self.spot(msg)
        if word is None or not self._is_new(msg.sender, msg.packet_id):
            return False  # a re-delivery goes on to policy, which logs it a duplicate
        self.heard_count += 1
        where = "DM" if msg.is_dm else f"ch{msg.channel}"
        log.warning(
            "EMERGENCY from %s (%s, %s hops, SNR %s): %r matched %r",
            node_id(msg.sender),
            where,
            msg.hops if msg.hops is not None else "?",
            msg.snr if msg.snr is not None else "?",
            msg.text,
            word,
            extra={"event": Event.EMERGENCY, "from": node_id(msg.sender), "packet_id": msg.packet_id, "word": word},
        )
        if word != FOLLOW_UP:
            self._reply(msg)  # a follow-up is not told "emergency heard" again
            self._open[_episode(msg)] = self._clock.now() + self._ecfg.follow_up_s
        self._heard[msg.sender] = msg
        texts = self._throttle.heard(msg.sender, msg.text or "", self._clock.now())
        if texts is not None:
            self._alert(msg, texts)
        self._answer(msg)
        return True

    def tick(self) -> None:
        """Send the alerts held back by the once-a-minute rule whose minute has passed; forget ended episodes."""
        now = self._clock.now()
        for key in [key for key, until in self._open.items() if until <= now]:
            del self._open[key]
        for node, texts in self._throttle.due(self._clock.now()):
            msg = self._heard.get(node)
            if msg is not None:
                self._alert(msg, texts)

    # -- what follows ---------------------------------------------------------------------------
    def _submit(self, out: Outbound, label: str) -> None:
        if self._sender is None:
            raise RuntimeError("EmergencyLane.connect was not called")
        self._sender.submit(SendJob(out, label, urgent=True))

    def _reply_target(self, msg: Inbound) -> tuple[int, int, bool]:
        """(dest, channel, want_ack): the sender by DM, or its channel."""
        return (msg.sender, msg.channel, True) if msg.is_dm else (limits.BROADCAST_NUM, msg.channel, False)

    def _reply(self, msg: Inbound) -> None:
        dest, channel, want_ack = self._reply_target(msg)
        ceiling = limits.MAX_TEXT_BYTES_DM_WITH_REPLY_ID if want_ack else limits.MAX_TEXT_BYTES_CHANNEL_WITH_REPLY_ID
        text = labelled(self._ecfg.reply, self.cfg.mesh.ai_tag, min(self.cfg.mesh.max_fragment_bytes, ceiling))
        self._submit(Outbound(text, dest, channel, want_ack, reply_id=msg.packet_id), "emergency reply")

    def _alert(self, msg: Inbound, texts: list[str]) -> None:
        raw = self._short_name_of(msg.sender) if self._short_name_of is not None else None
        facts = AlertFacts(
            sender=msg.sender,
            name=clean_name(raw),
            texts=texts,
            hops=msg.hops,
            snr=msg.snr,
            channel=None if msg.is_dm else msg.channel,
            position=self._position(msg.sender),
            origin=self._position(self._node.node_num),
        )
        text = alert_text(facts, self._wall())
        targets = [(dest, 0, True) for dest in self._notify if dest != msg.sender]
        if self._ecfg.notify_channel is not None:
            targets.append((limits.BROADCAST_NUM, self._ecfg.notify_channel, False))
        for dest, channel, want_ack in targets:
            ceiling = limits.MAX_TEXT_BYTES_DM if want_ack else limits.MAX_TEXT_BYTES_CHANNEL
            budget = min(self.cfg.mesh.max_fragment_bytes, ceiling)
            plan = fragment(text, budget, ALERT_MAX_FRAGMENTS, tag=self.cfg.mesh.ai_tag)
            for frag in plan.fragments:
                self._submit(Outbound(frag.text, dest, channel, want_ack), f"emergency alert {frag.index}")
        log.warning(
            "emergency alert for %s to %s: %s",
            node_id(msg.sender),
            ", ".join(node_id(d) if d != limits.BROADCAST_NUM else f"ch{c}" for d, c, _ in targets) or "nobody",
            text,
            extra={"event": Event.EMERGENCY_ALERT, "from": node_id(msg.sender), "targets": len(targets)},
        )

    def _position(self, node: int) -> Position | None:
        if self._positions is None:
            return None
        try:
            return self._positions.position_of(node)
        except Exception:  # a broken node DB entry must not stop the alert
            log.exception("position of %s unreadable", node_id(node))
            return None

    def _answer(self, msg: Inbound) -> None:
        if self._accept is None or self._enqueue is None:
            raise RuntimeError("EmergencyLane.connect was not called")
        dest, channel, want_ack = self._reply_target(msg)
        question = cut_to_bytes((msg.text or "").strip(), self.cfg.policy.max_input_bytes)
        query = self._accept(msg, Accept(Kind.ASK, question, dest, channel, want_ack))
        self._enqueue(dataclasses.replace(query, emergency=True))
