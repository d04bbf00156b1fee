"""Which packets the bot answers, and where the answer goes. Pure: no I/O, no clock."""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import regex

from meshbot.core import limits
from meshbot.core.config import ChannelRule, PolicyConfig
from meshbot.core.domain import Inbound
from meshbot.core.events import Reason

TEXT_PORT = "TEXT_MESSAGE_APP"
MORE_WORDS = frozenset({"more", "!more", "more?", "more please", "continue"})
# Punctuation people put after a trigger: "!ai: what is lora", "@BOT, hi".
_TRIGGER_TAIL = " \t:,;-–—"


class Kind(enum.Enum):
    """What an accepted message asks for."""

    ASK = "ask"
    MORE = "more"


@dataclass(frozen=True)
class Accept:
    """Answer this message: `question` to `reply_to` on `reply_channel`."""

    kind: Kind
    question: str
    reply_to: int  # a node number, or BROADCAST_NUM for a channel reply
    reply_channel: int
    want_ack: bool
    cut_bytes: int = 0  # input bytes dropped because it was over max_input_bytes


@dataclass(frozen=True)
class Ignore:
    """Do not answer; `reason` is the code for the log and the store, `detail` what a person reads too."""

    reason: Reason
    detail: str = ""


Decision = Accept | Ignore


class SeenPackets:
    """A bounded memory of (sender, packet id) pairs, to drop re-deliveries."""

    def __init__(self, capacity: int = 4096) -> None:
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._seen)

    def is_new(self, sender: int, packet_id: int) -> bool:
        """True the first time a pair is seen; remembers it either way."""
        key = (sender, packet_id)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


def cut_to_bytes(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` within `max_bytes` UTF-8 bytes, cut between graphemes."""
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    used, kept = 0, []
    for cluster in regex.findall(r"\X", text):
        size = len(cluster.encode("utf-8"))
        if used + size > max_bytes:
            break
        kept.append(cluster)
        used += size
    return "".join(kept)


def match_trigger(text: str, triggers: tuple[str, ...], short_name: str) -> str | None:
    """The text after a trigger prefix (case-insensitive), or None when it does not address us."""
    folded = text.casefold()
    for trigger in triggers:
        word = trigger.replace("{short_name}", short_name).casefold()
        if word and folded.startswith(word):
            rest = text[len(word) :]
            # "!aid" is not "!ai": the trigger must end at a word boundary.
            if rest and rest[0].isalnum() and word[-1].isalnum():
                continue
            return rest.lstrip(_TRIGGER_TAIL)
    return None


class Policy:
    """Judges inbound packets against the config; holds only the duplicate memory."""

    def __init__(
        self,
        cfg: PolicyConfig,
        my_node_num: int,
        short_name: str,
        is_new: Callable[[int, int], bool] | None = None,
        public_channels: frozenset[int] | None = None,
    ) -> None:
        self._cfg = cfg
        # The mesh's default public channel(s), as the radio reports them; unknown: assume index 0 is.
        self.public_channels = frozenset({0}) if public_channels is None else public_channels
        self.my_node_num = my_node_num
        self.short_name = cfg.short_name or short_name
        self._channels: dict[int, ChannelRule] = {rule.index: rule for rule in cfg.channels}
        # The daemon passes the durable store's memory, so re-deliveries after a restart are caught.
        self._is_new = is_new or SeenPackets().is_new

    def judge(self, msg: Inbound) -> Decision:
        """Decide whether to answer `msg`, in the order an operator would read the reasons."""
        early = self._reject_packet(msg)
        if early is not None:
            return early
        if not self._is_new(msg.sender, msg.packet_id):
            return Ignore(Reason.DUPLICATE)
        assert msg.text is not None  # _reject_packet drops texts that did not decode
        text = msg.text.strip()
        if msg.is_dm:
            return self._judge_dm(msg, text)
        return self._judge_channel(msg, text)

    def _reject_packet(self, msg: Inbound) -> Ignore | None:
        if msg.sender == self.my_node_num:
            return Ignore(Reason.OWN_PACKET)
        if msg.portnum != TEXT_PORT:
            return Ignore(Reason.OTHER_PORT, msg.portnum)
        if msg.emoji:
            return Ignore(Reason.TAPBACK)
        if msg.text is None:
            return Ignore(Reason.INVALID_UTF8)
        if not msg.text.strip():
            return Ignore(Reason.EMPTY)
        if not msg.is_dm and msg.to != limits.BROADCAST_NUM:
            return Ignore(Reason.NOT_FOR_US)
        if msg.via_mqtt and self._cfg.ignore_mqtt:
            return Ignore(Reason.VIA_MQTT)
        hops = msg.hops
        if self._cfg.max_hops is not None and hops is not None and hops > self._cfg.max_hops:
            return Ignore(Reason.TOO_FAR, f"{hops} hops")
        return None

    def _judge_dm(self, msg: Inbound, text: str) -> Decision:
        if not self._cfg.answer_dms:
            return Ignore(Reason.DMS_DISABLED)
        return self._accept(text, reply_to=msg.sender, channel=msg.channel, want_ack=True)

    def _judge_channel(self, msg: Inbound, text: str) -> Decision:
        rule = self._channels.get(msg.channel)
        if rule is None or rule.reply == "off":
            return Ignore(Reason.CHANNEL_DISABLED, f"channel {msg.channel}")
        if msg.channel in self.public_channels and not rule.public:
            return Ignore(Reason.PUBLIC_CHANNEL, f"channel {msg.channel}: set public = true to answer it")
        question = match_trigger(text, rule.triggers, self.short_name)
        if question is None:
            return Ignore(Reason.NO_TRIGGER)
        if not question.strip():
            return Ignore(Reason.EMPTY)
        return self._channel_accept(msg, rule, question)

    def as_part(self, msg: Inbound) -> Accept | None:
        """A channel message without the trigger, taken as the next part of a question already waiting."""
        rule = self._channels.get(msg.channel)
        if msg.is_dm or rule is None or msg.text is None or not msg.text.strip():
            return None
        return self._channel_accept(msg, rule, msg.text.strip())

    def cooldown_s(self, channel: int) -> float:
        """The configured quiet time after a question taken on `channel` (0 for DMs and unknown channels)."""
        rule = self._channels.get(channel)
        return rule.cooldown_s if rule is not None else 0.0

    def _channel_accept(self, msg: Inbound, rule: ChannelRule, question: str) -> Accept:
        if rule.reply == "dm":
            return self._accept(question, reply_to=msg.sender, channel=msg.channel, want_ack=True)
        return self._accept(question, reply_to=limits.BROADCAST_NUM, channel=msg.channel, want_ack=False)

    def _accept(self, text: str, *, reply_to: int, channel: int, want_ack: bool) -> Accept:
        kind = Kind.MORE if text.casefold().strip(" .!") in MORE_WORDS else Kind.ASK
        question = cut_to_bytes(text, self._cfg.max_input_bytes)
        cut = len(text.encode("utf-8")) - len(question.encode("utf-8"))
        return Accept(kind, question, reply_to, channel, want_ack, cut_bytes=cut)
