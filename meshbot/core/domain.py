"""Immutable messages and the small Protocols at meshbot's boundaries.

Everything here is pure: the radio module turns library packets into `Inbound`, the
model module turns a `Generation` into text pieces, and the core never sees either library.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from meshbot.core.directory import NodeRecord, NodeReport

_MAX_HOPS = 7  # the header's 3-bit hop fields (limits.MAX_HOP_LIMIT)


@dataclass(frozen=True)
class Inbound:
    """One packet from the radio, parsed but not yet judged by policy."""

    sender: int
    to: int
    packet_id: int
    portnum: str
    text: str | None  # None when the payload is not valid UTF-8 or not a text port
    payload_len: int  # bytes of the raw payload
    channel: int = 0
    is_dm: bool = False
    emoji: bool = False  # a tapback reaction
    reply_id: int | None = None
    hop_start: int | None = None
    hop_limit: int | None = None
    snr: float | None = None
    rssi: int | None = None
    rx_time: float | None = None
    via_mqtt: bool = False
    pki: bool = False  # PKI-encrypted to us: the firmware's pki_encrypted, or opened with our own key (mqtt)
    sender_key: bytes | None = None  # the public key a PKI DM was opened with, when the transport says

    @property
    def hops(self) -> int | None:
        """Hops the packet travelled, when the firmware told us; None (unknown) for impossible values.

        Both fields are 3-bit on air (0-7), and a packet cannot have more hops left than it started with:
        anything else is a corrupt or forged header, not a distance.
        """
        start, left = self.hop_start, self.hop_limit
        if start is None or left is None:
            return None
        if not (0 <= left <= start <= _MAX_HOPS):
            return None
        return start - left


class AckStatus(enum.Enum):
    """How a sent packet ended, as the radio reported it."""

    ACKED = "acked"  # an explicit ACK from the destination
    IMPLICIT = "implicit"  # our own node reported a rebroadcast was overheard
    NAKED = "naked"  # a routing error: see `reason`
    TIMEOUT = "timeout"  # nothing came back in time
    SENT = "sent"  # no ACK was asked for (a channel broadcast)
    FAILED = "failed"  # the radio refused the send (disconnected, library error)


@dataclass(frozen=True)
class SendResult:
    """The radio's answer for one sent packet id."""

    packet_id: int
    status: AckStatus
    reason: str = "NONE"  # Routing.Error name, e.g. RATE_LIMIT_EXCEEDED


@dataclass(frozen=True)
class LocalNode:
    """Who the attached node is and its LoRa settings, read once connected."""

    node_num: int
    short_name: str = ""
    long_name: str = ""
    modem_preset: str = "LONG_FAST"
    region: str = "UNSET"
    hop_limit: int = 3
    # Channel indices that are the mesh's default public channel (named after the preset, default key);
    # None when the radio did not say (policy then assumes index 0 is).
    public_channels: frozenset[int] | None = None
    can_transmit: bool = True  # False: the node's settings keep its transmitter off (it hears, never answers)

    def problems(self) -> tuple[str, ...]:
        """What keeps this node from serving, as neutral codes (the radio module words the advice)."""
        found = []
        if not self.can_transmit:
            found.append(CANNOT_TRANSMIT)
        if self.region == "UNSET":
            found.append(NO_REGION)
        return tuple(found)


# LocalNode.problems codes; `meshbot status` reads them back from the store as "radio-<code>" events.
CANNOT_TRANSMIT = "cannot-transmit"
NO_REGION = "no-region"


class RadioEvent(enum.Enum):
    """Connection state changes the radio reports."""

    CONNECTED = "connected"
    LOST = "lost"


@dataclass(frozen=True)
class Outbound:
    """One text to put on air."""

    text: str
    dest: int
    channel: int = 0
    want_ack: bool = False
    reply_id: int | None = None
    # Send under this packet id: a copy of a text that may be on air already, so that a receiver that has it drops
    # the copy (and ACKs it again). None: the radio picks a new id.
    packet_id: int | None = None


class RadioUnavailable(Exception):
    """The radio link is down; the send can be tried again once it is back."""


class Radio(Protocol):
    """The one way meshbot talks to a Meshtastic node."""

    def start(
        self,
        on_packet: Callable[[Inbound], None],
        on_event: Callable[[RadioEvent], None],
    ) -> None:
        """Connect and begin delivering packets and connection events.

        Retries until connected; close() from another thread ends it promptly with RadioUnavailable.
        """

    def local_node(self) -> LocalNode:
        """Our node: number, names and LoRa settings (valid once started)."""

    def send(self, message: Outbound, on_result: Callable[[SendResult], None]) -> int:
        """Send a text and return its packet id; `on_result` gets its ACK or NAK."""

    def close(self) -> None:
        """Disconnect and release the device, ending any reconnecting; safe twice and from any thread."""


@runtime_checkable
class NodeDirectory(Protocol):
    """What the bot knows about the nodes of its mesh (kept by service/directory.py, read by commands and prompts)."""

    def short_name_of(self, node: int) -> str | None:
        """The node's short name as its owner set it (raw, untrusted), or None if unknown."""

    def record(self, node: int) -> NodeRecord | None:
        """Everything known about one node, or None."""

    def records(self) -> list[NodeRecord]:
        """Every known node, the most recently heard first."""

    def own(self) -> NodeRecord | None:
        """The bot's own node, once its radio said who it is."""

    def find(self, name: str) -> NodeRecord | None:
        """A node by short name, long name or `!id`."""

    def named(self, text: str) -> list[NodeRecord]:
        """The known nodes a text names."""

    def now(self) -> float:
        """Wall-clock epoch seconds, the time base of every record's `heard.at`."""


@runtime_checkable
class NodeReporter(Protocol):
    """A transport that tells a node directory what it hears about nodes."""

    def report_nodes(self, sink: Callable[[NodeReport], None]) -> None:
        """Send every `NodeReport` from now on to `sink` (called before start; it runs on the radio's thread)."""


@dataclass(frozen=True)
class ChatTurn:
    """One message of a chat prompt."""

    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Note:
    """A passage of the operator's own notes given to the model as grounding."""

    title: str  # where it came from, as `!src` tells the asker (file and heading)
    text: str


@dataclass(frozen=True)
class Asker:
    """What the model may be told about who is asking: cleaned, bounded, never instructions."""

    short_name: str | None = None
    hops: int | None = None


# (question as remembered, answer as kept) -> the next prompt's history: see `Context.follow_up`.
FollowUp = Callable[[str, str], tuple[ChatTurn, ...]]


@dataclass(frozen=True)
class Context:
    """What goes into a question's prompt besides the question: history, notes, the asker."""

    history: tuple[ChatTurn, ...] = ()
    notes: tuple[Note, ...] | None = None  # None: no knowledge configured; (): nothing relevant found
    asker: Asker | None = None
    mesh: str | None = None  # the mesh facts block, for a question about the mesh (None: not about it)
    # The history the conversation's next prompt will carry, given this question and answer as memory keeps them:
    # None without memory. Not compared.
    follow_up: FollowUp | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Generation:
    """A request to the model: the chat so far and how much it may write."""

    turns: tuple[ChatTurn, ...]
    max_tokens: int
    seed: int | None = None  # None: the model's configured seed
    # Whose exchange this is ("node/channel"): a backend that keeps engine states for follow-ups keeps
    # one per conversation, the newest replacing the last. None: keyed by the tokens alone.
    conversation: str | None = None
    # The question as memory keeps it, when the prompt's last turn says more (the operator's notes): the state a
    # backend keeps for the follow-up holds this form, the one the follow-up's history will have.
    remembered: str | None = None
    # The answer as memory will keep it, from the pieces the model wrote (tidied, filtered, checked): the state a
    # backend keeps for the follow-up holds that text, token for token as its history renders it. None: the
    # pieces joined and stripped. Not compared: two requests alike ask for the same answer.
    kept_answer: Callable[[Sequence[str]], str] | None = field(default=None, compare=False)
    # The history the conversation's next prompt will carry after this exchange (memory's bounds applied): a
    # backend that keeps states settles to it, so a conversation past its bound leaves its oldest exchange out
    # here, off the next question's path. None: this prompt's history plus this exchange.
    next_history: FollowUp | None = field(default=None, compare=False)


@dataclass
class GenerationStats:
    """Figures the model reports for one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    truncated_input: bool = False
    extra: dict[str, float] = field(default_factory=dict)


T = TypeVar("T")


class Model(Protocol):
    """A text generator that streams pieces of its answer (`models.base.BaseModel` has the defaults)."""

    name: str
    deterministic: bool  # same request and seed, same text: a crashed answer may be regenerated

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        """Yield text pieces as they are generated, filling `stats` as it goes."""

    def run(self, job: Callable[[], T]) -> T:
        """Run `job`, which streams from this model, where the backend computes best."""

    def close(self) -> None:
        """Release what the backend holds."""


class Clock(Protocol):
    """Time and sleeping, injected so that pacing is tested in virtual time."""

    def now(self) -> float:
        """Monotonic seconds."""

    def sleep(self, seconds: float) -> None:
        """Block for `seconds` (virtual clocks advance instead)."""

    def wait_for(self, event: threading.Event, timeout: float) -> bool:
        """Wait until `event` is set or `timeout` passes; True when it was set."""


@runtime_checkable
class KeyPins(Protocol):
    """A radio that pins askers' public keys itself (trust on first use) and lets an operator unpin one."""

    def forget_key(self, node: int) -> bool:
        """Forget `node`'s pinned key, so its next NodeInfo is believed; True when one was pinned."""
