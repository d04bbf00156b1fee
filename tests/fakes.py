"""Hand-written fakes for the radio and the model, injected through fixtures in conftest.py."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from meshbot.core.clock import VirtualClock
from meshbot.core.directory import NodeReport
from meshbot.core.domain import (
    AckStatus,
    Generation,
    GenerationStats,
    Inbound,
    LocalNode,
    Outbound,
    RadioEvent,
    RadioUnavailable,
    SendResult,
)
from meshbot.models.base import ModelUnavailable

AI_TAG = "🤖 "  # [mesh] ai_tag's default
BOT_NUM = 0x0BB0_0001
ALICE = 0x0A11_CE00
BOB = 0x0B0B_0000


@dataclass
class Sent:
    """One text the daemon handed to the fake radio."""

    packet_id: int
    message: Outbound
    at: float


T = TypeVar("T")


class FakeRadio:
    """A radio that records sends and answers each with a scripted outcome.

    `outcomes` is a queue of AckStatus/reason pairs used in order; when empty, DMs are ACKed.
    With `ack_delay_s`, the ACK arrives after that much virtual time.
    """

    def __init__(self, clock: VirtualClock, node: LocalNode | None = None) -> None:
        self.clock = clock
        self.node = node or LocalNode(BOT_NUM, "BOT", "meshbot", "LONG_FAST", "US", 3)
        self.sent: list[Sent] = []
        self.outcomes: deque[tuple[AckStatus, str]] = deque()
        self.up = True
        self.closed = False
        self._next_id = 1000
        self._lock = threading.Lock()
        self.on_packet: Callable[[Inbound], None] | None = None
        self.on_event: Callable[[RadioEvent], None] | None = None
        self.on_send: Callable[[Sent], None] | None = None  # test hook, runs inside send()
        self.unanswered: list[tuple[int, Callable[[SendResult], None]]] = []  # TIMEOUT sends, for late ACKs
        self.names: dict[int, str] = {}
        self.node_sink: Callable[[NodeReport], None] | None = (
            None  # short names heard in NodeInfo, as a real node DB would hold them
        )

    def short_name_of(self, node: int) -> str | None:
        return self.names.get(node)

    def report_nodes(self, sink: Callable[[NodeReport], None]) -> None:
        """Where node reports go (the daemon's node directory), as a real transport would send them."""
        self.node_sink = sink

    def hear(self, report: NodeReport) -> None:
        """A packet about a node heard on air (a Position, Telemetry, NodeInfo...), as the radio reports it."""
        assert self.node_sink is not None, "no node directory listens"
        self.node_sink(report)

    def start(self, on_packet, on_event) -> None:
        self.on_packet, self.on_event = on_packet, on_event

    def local_node(self) -> LocalNode:
        return self.node

    def receive(self, msg: Inbound) -> None:
        """Deliver a packet as the radio library would."""
        assert self.on_packet is not None
        self.on_packet(msg)

    def send(self, message: Outbound, on_result: Callable[[SendResult], None]) -> int:
        if not self.up:
            raise RadioUnavailable("fake radio down")
        with self._lock:
            self._next_id += 1
            packet_id = message.packet_id or self._next_id  # a copy goes under the id it was given, as radios do
            record = Sent(packet_id, message, self.clock.now())
            self.sent.append(record)
            status, reason = self.outcomes.popleft() if self.outcomes else (AckStatus.ACKED, "NONE")
        if message.want_ack and status is AckStatus.TIMEOUT:
            self.unanswered.append((packet_id, on_result))
        if self.on_send is not None:
            self.on_send(record)
        if message.want_ack and status is not AckStatus.TIMEOUT:
            on_result(SendResult(packet_id, status, reason))
        return packet_id

    def close(self) -> None:
        self.closed = True

    def texts(self) -> list[str]:
        """What went on air, in order, without the leading AI tag (tests of the tag itself read `sent`)."""
        return [s.message.text.removeprefix(AI_TAG) for s in self.sent]


class FakeModel:
    """A model with queued answers that streams them word by word.

    `token_s` advances the virtual clock per piece, so tests can see what left while it 'wrote'.
    """

    name = "fake-model"
    deterministic = True  # the same queued answer comes back for a resumed question
    # Stands for a capable model: `[answers] mode = "auto"` answers it `open`, so tests about delivery get
    # their queued answers on air (tests of grounded answers set the mode, or set n_params to None).
    n_params: int | None = 7_000_000_000

    def close(self) -> None:
        """Nothing to release."""

    def __init__(self, clock: VirtualClock | None = None, token_s: float = 0.0) -> None:
        self.answers: deque[str] = deque()
        self.requests: list[Generation] = []
        self.clock = clock
        self.token_s = token_s
        self.pieces_yielded = 0
        self.finished = threading.Event()
        self.running_jobs = 0  # jobs inside run() now
        self.streams_outside_run = 0  # a real model would hand every token to another thread

    def run(self, job: Callable[[], T]) -> T:
        """Runs `job` here: a fake has no thread of its own."""
        self.running_jobs += 1
        try:
            return job()
        finally:
            self.running_jobs -= 1

    def queue(self, *answers: str) -> FakeModel:
        self.answers.extend(answers)
        return self

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        self.requests.append(request)
        self.streams_outside_run += self.running_jobs == 0
        self.finished.clear()
        answer = self.answers.popleft() if self.answers else "I do not know."
        words = answer.split(" ")
        for i, word in enumerate(words):
            if self.clock is not None and self.token_s:
                self.clock.advance(self.token_s)
            self.pieces_yielded += 1
            stats.completion_tokens += 1
            if stats.first_token_s is None:
                stats.first_token_s = self.token_s
            yield word if i == 0 else " " + word
        stats.total_s = self.token_s * len(words)
        self.finished.set()


def dm(text: str | None, *, sender: int = ALICE, packet_id: int = 1, **kw) -> Inbound:
    """An inbound DM to the bot, PKI-encrypted as firmware 2.7 sends one (pki=False: a legacy channel-key DM)."""
    fields = dict(
        sender=sender,
        to=BOT_NUM,
        packet_id=packet_id,
        portnum="TEXT_MESSAGE_APP",
        text=text,
        payload_len=len((text or "").encode()),
        is_dm=True,
        pki=True,
        hop_start=3,
        hop_limit=3,
    )
    fields.update(kw)
    return Inbound(**fields)


def broadcast(text: str, *, sender: int = ALICE, packet_id: int = 1, channel: int = 0, **kw) -> Inbound:
    """An inbound channel broadcast."""
    fields = dict(
        sender=sender,
        to=0xFFFFFFFF,
        packet_id=packet_id,
        portnum="TEXT_MESSAGE_APP",
        text=text,
        payload_len=len(text.encode()),
        is_dm=False,
        channel=channel,
        hop_start=3,
        hop_limit=2,
    )
    fields.update(kw)
    return Inbound(**fields)


class FlakyServerModel(FakeModel):
    """A FakeModel standing for a model server: each stream first takes the next scripted failure.

    `failures` holds, per stream call, None (answer normally), a ModelUnavailable (raised before any text)
    or a ModelStalled (raised after `stall_after` pieces of the answer). Empty: answer normally.
    """

    name = "fake-server"
    deterministic = False

    def __init__(self, clock: VirtualClock | None = None, stall_after: int = 40) -> None:
        super().__init__(clock)
        self.failures: deque[Exception | None] = deque()
        self.stall_after = stall_after
        self.calls = 0

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        self.calls += 1
        failure = self.failures.popleft() if self.failures else None
        if isinstance(failure, ModelUnavailable):
            raise failure
        for i, piece in enumerate(super().stream(request, stats)):
            if failure is not None and i == self.stall_after:
                raise failure
            yield piece
