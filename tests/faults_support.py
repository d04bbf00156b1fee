"""Shared by the fault tests: the audit of what went on air, and an in-process daemon on a virtual node."""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.clock import ScaledClock
from meshbot.core.config import Config, load_config
from meshbot.core.domain import Generation, GenerationStats
from meshbot.core.events import Event
from meshbot.radios.meshtastic_lib import MeshtasticRadio
from meshbot.service.daemon import Daemon
from meshbot.sim.node.node import VirtualNode
from meshbot.sim.node.records import SentPacket
from meshbot.storage.store import Store
from tests.fakes import AI_TAG, BOT_NUM, FakeModel

PEERS = [(0x0A11_0000 + i, f"Peer {i}", f"P{i}") for i in range(8)]
PEER_NUMS = [num for num, _, _ in PEERS]
SCALE = 20.0  # the in-process daemon and its node share a ScaledClock: pacing gaps pass 20x faster
ON_AIR = ("ACK", "PENDING", "MAX_RETRANSMIT")  # other outcomes are the node refusing to transmit
_HEAD = re.compile(r"\A([1-9][0-9]*)/(\+|[1-9][0-9]*) ")
LONG_ANSWER = (
    "LoRa trades speed for range: a slow chirp spread spectrum signal can be heard far below "
    "the noise floor, which is why a small node on a hill reaches tens of kilometres. "
) * 2


# -- what went on air ---------------------------------------------------------------------------
# Every fault test asserts what went on air, as the virtual node (or the fake radio) recorded it:
# each question's reply fragments 1..n all delivered, and no fragment sent again once the daemon
# knew it was delivered. A fragment in flight when a fault struck may go out again: that is allowed.
def fragment_index(text: str | None) -> tuple[int, bool]:
    """(index, final) of a reply fragment; an unnumbered text is a whole one-fragment answer."""
    match = _HEAD.match((text or "").removeprefix(AI_TAG))
    if match is None:
        return 1, True
    return int(match.group(1)), match.group(2) != "+"


@dataclass
class Audit:
    """Per question: complete or not; and every fragment that went on air more than once."""

    complete: set[tuple[int, int]] = field(default_factory=set)
    incomplete: dict[tuple[int, int], str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    resent_in_flight: int = 0  # sent again after a fault caught it unacknowledged: allowed

    def assert_clean(self) -> None:
        """No question lost, none answered twice."""
        assert not self.incomplete, f"questions not fully answered: {self.incomplete}"
        assert not self.duplicates, f"fragments sent again after they were delivered: {self.duplicates}"


def audit(
    sent: list[SentPacket],
    questions: Iterable[tuple[int, int]],
    max_fragments: int,
    knew_delivered: Callable[[int, int], bool],
) -> Audit:
    """Check the replies to `questions` ((sender, packet id)) in `sent`.

    `knew_delivered(i, j)`: the daemon knew record i was delivered when it sent record j (i < j).
    """
    result = Audit()
    by_question: dict[tuple[int, int], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for pos, packet in enumerate(sent):
        if packet.reply_id is not None and packet.outcome in ON_AIR:
            by_question[(packet.to, packet.reply_id)][fragment_index(packet.text)[0]].append(pos)
    for question in questions:
        frags = by_question.get(question, {})
        delivered = sorted(i for i, where in frags.items() if any(sent[p].outcome == "ACK" for p in where))
        last = delivered[-1] if delivered else 0
        final = last and (last == max_fragments or any(fragment_index(sent[p].text)[1] for p in frags[last]))
        if not final or delivered != list(range(1, last + 1)):
            result.incomplete[question] = f"delivered fragments {delivered}"
            continue
        result.complete.add(question)
        for index, where in frags.items():
            for n, later in enumerate(where[1:], start=1):
                known = [earlier for earlier in where[:n] if knew_delivered(earlier, later)]
                if known:
                    result.duplicates.append(f"q{question} #{index}: records {known[0]} and {later}")
                else:
                    result.resent_in_flight += 1
    return result


def log_order_knowledge(sent: list[SentPacket], records: list[logging.LogRecord]) -> Callable[[int, int], bool]:
    """`knew_delivered` from the daemon's own log: its ACK line for i came before its send line for j."""
    acked_at: dict[int, int] = {}
    sent_at: dict[int, int] = {}
    for pos, record in enumerate(records):
        event, packet_id = getattr(record, "event", None), getattr(record, "packet_id", None)
        if event == Event.FRAGMENT_ACKED:
            acked_at.setdefault(packet_id, pos)
        elif event == Event.FRAGMENT_SENT:
            sent_at.setdefault(packet_id, pos)

    def knew(i: int, j: int) -> bool:
        first, again = sent[i].packet_id, sent[j].packet_id
        if first == again:  # the library wrote the same packet twice: a bug unless never acked
            return first in acked_at
        return acked_at.get(first, 1 << 60) < sent_at.get(again, -1)

    return knew


# -- an in-process daemon on a virtual node -------------------------------------------------------
@dataclass
class Bench:
    """A virtual node, and daemons (one at a time) on it sharing one store file and one clock."""

    node: VirtualNode
    clock: ScaledClock
    model: FakeModel
    cfg: Config
    daemons: list[Daemon] = field(default_factory=list)

    def start_daemon(self) -> Daemon:
        """A fresh daemon on the same store file: a restart."""
        radio = MeshtasticRadio(self.cfg.radio, backoff_s=(0.2, 1.0))
        daemon = build_daemon(self.cfg, radio=radio, model=self.model, clock=self.clock)
        daemon.start()
        self.daemons.append(daemon)
        return daemon

    def stop_daemon(self, daemon: Daemon) -> None:
        """A graceful stop; the store file stays for the next start."""
        daemon.stop(grace_s=2.0)
        self.daemons.remove(daemon)

    def settled(self, daemon: Daemon, handshakes: int = 1) -> bool:
        """Connected, config downloaded, and the library's first heartbeat answered.

        A drop before that heartbeat races the library's own write of it (see VirtualNode notes).
        """
        iface = getattr(daemon.radio, "_iface", None)  # no public handle on the library's link
        return (
            self.node.client_connected
            and self.node.handshakes >= handshakes
            and daemon.radio_up.is_set()
            and iface is not None
            and iface.queueStatus is not None
        )

    def ask(self, sender: int, packet_id: int, text: str) -> tuple[int, int]:
        """A DM heard by the node; returns the question's key."""
        self.node.inject_text(sender, text, packet_id=packet_id)
        return sender, packet_id


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Callable[..., Bench]]:
    made: list[Bench] = []

    def make(ack_delay_s: float = 0.05, **overrides: Any) -> Bench:
        clock = ScaledClock(SCALE)
        node = VirtualNode(
            BOT_NUM,
            short_name="BOT",
            modem_preset="SHORT_TURBO",
            region="US",
            peers=PEERS,
            clock=clock,
            ack_delay_s=ack_delay_s,
        )
        node.start()
        settings = {
            "radio.host": f"127.0.0.1:{node.port}",
            "radio.connect_timeout_s": 10,
            "mesh.min_gap_s": 2.0,
            "store.path": str(tmp_path / "meshbot.db"),
            "limits.per_node_burst": 50,
            "limits.global_burst": 200,
            "limits.per_node_per_hour": 1000,
            "limits.global_per_hour": 5000,
            "join.window_s": 0,  # one-liners like "q1" are answered at once (joining: tests/test_joining.py)
        }
        settings.update(overrides)
        made.append(Bench(node, clock, FakeModel(), load_config(overrides=settings, environ={})))
        return made[-1]

    yield make
    for b in made:
        for daemon in b.daemons:
            daemon.stop(grace_s=2.0)
        b.node.stop()


def answered(b: Bench, questions: Iterable[tuple[int, int]]) -> Callable[[], bool]:
    """A predicate: every question has a complete, settled reply on air."""
    wanted = list(questions)
    return lambda: answered_on_air(b.node.sent, wanted, b.cfg.mesh.max_fragments)


def answered_on_air(sent: list[SentPacket], questions: Iterable[tuple[int, int]], max_fragments: int) -> bool:
    """Every question has a complete reply and nothing is waiting for an ACK."""
    if any(p.outcome == "PENDING" for p in sent):
        return False
    return not audit(sent, questions, max_fragments, lambda i, j: False).incomplete


def events(caplog: pytest.LogCaptureFixture, name: str, reason: str | None = None) -> list[logging.LogRecord]:
    """Log records of one event (and reason)."""
    return [
        r
        for r in caplog.records
        if getattr(r, "event", None) == name and (reason is None or getattr(r, "reason", None) == reason)
    ]


# -- a slow model ------------------------------------------------------------------------------
class GatedModel(FakeModel):
    """Holds its first answer until `gate` opens: a slow model, while the flood arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        """Wait for the gate (real time), then answer as FakeModel does."""
        self.gate.wait(30)
        yield from super().stream(request, stats)
