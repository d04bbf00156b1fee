"""Faults: never lose a question, never crash, never answer twice.

Every test here asserts what went on air, as the virtual node (or the fake radio) recorded it:
each question's reply fragments 1..n all delivered, and no fragment sent again once the daemon
knew it was delivered. A fragment in flight when a fault struck may go out again: that is allowed.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest
from meshtastic import publishingThread

from meshbot import limits
from meshbot.clock import ScaledClock, VirtualClock
from meshbot.config import Config, load_config
from meshbot.daemon import Daemon
from meshbot.domain import Generation, GenerationStats
from meshbot.radio import MeshtasticRadio
from meshbot.sim.node import VirtualNode
from meshbot.sim.records import SentPacket
from meshbot.store import Store

from tests.conftest import wait_until
from tests.daemon_proc import DaemonProcess
from tests.fakes import BOT_NUM, FakeModel, FakeRadio, dm

PEERS = [(0x0A11_0000 + i, f"Peer {i}", f"P{i}") for i in range(8)]
PEER_NUMS = [num for num, _, _ in PEERS]
SCALE = 20.0  # the in-process daemon and its node share a ScaledClock: pacing gaps pass 20x faster
ON_AIR = ("ACK", "PENDING", "MAX_RETRANSMIT")  # other outcomes are the node refusing to transmit
_HEAD = re.compile(r"\A([1-9][0-9]*)/(\+|[1-9][0-9]*) ")
LONG_ANSWER = ("LoRa trades speed for range: a slow chirp spread spectrum signal can be heard far below "
               "the noise floor, which is why a small node on a hill reaches tens of kilometres. ") * 2


# -- what went on air ---------------------------------------------------------------------------
def fragment_index(text: str | None) -> tuple[int, bool]:
    """(index, final) of a reply fragment; an unnumbered text is a whole one-fragment answer."""
    match = _HEAD.match(text or "")
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


def audit(sent: list[SentPacket], questions: Iterable[tuple[int, int]], max_fragments: int,
          knew_delivered: Callable[[int, int], bool]) -> Audit:
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
        if event == "fragment-acked":
            acked_at.setdefault(packet_id, pos)
        elif event == "fragment-sent":
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
        daemon = Daemon(self.cfg, radio, self.model, self.clock, store=Store(self.cfg.store.path))
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
        return (self.node.client_connected and self.node.handshakes >= handshakes and daemon.radio_up.is_set()
                and iface is not None and iface.queueStatus is not None)

    def ask(self, sender: int, packet_id: int, text: str) -> tuple[int, int]:
        """A DM heard by the node; returns the question's key."""
        self.node.inject_text(sender, text, packet_id=packet_id)
        return sender, packet_id


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Callable[..., Bench]]:
    made: list[Bench] = []

    def make(ack_delay_s: float = 0.05, **overrides: Any) -> Bench:
        clock = ScaledClock(SCALE)
        node = VirtualNode(BOT_NUM, short_name="BOT", modem_preset="SHORT_TURBO", region="US", peers=PEERS,
                           clock=clock, ack_delay_s=ack_delay_s)
        node.start()
        settings = {"radio.host": f"127.0.0.1:{node.port}", "radio.connect_timeout_s": 10,
                    "mesh.min_gap_s": 2.0, "store.path": str(tmp_path / "meshbot.db"),
                    "limits.per_node_burst": 50, "limits.global_burst": 200,
                    "limits.per_node_per_hour": 1000, "limits.global_per_hour": 5000}
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
    return [r for r in caplog.records if getattr(r, "event", None) == name
            and (reason is None or getattr(r, "reason", None) == reason)]


# -- 1. the daemon process killed mid-reply -----------------------------------------------------
KILL_QUESTIONS = ("Explain how LoRa radios reach so far.", "What is a mesh network and how does it route?",
                  "Why is the sky blue? Explain in detail.")


def kill_knowledge(sent: list[SentPacket], kills: list[list[SentPacket]]) -> Callable[[int, int], bool]:
    """`knew_delivered` across kills: a kill snapshot between i and j says whether i was ACKed then.

    Each kill lands right after the node records a new fragment. The sender sends one fragment at a
    time and stores each ACK before the next send, so every earlier ACK is in the store by then.
    Within one run a fragment is only sent again after a NAK or a timeout, so an ACK means it was known.
    """
    def knew(i: int, j: int) -> bool:
        between = [snap for snap in kills if i < len(snap) <= j]
        if between:
            return any(snap[i].outcome == "ACK" for snap in between)
        return sent[i].outcome == "ACK"

    return knew


def wait_for_record(node: VirtualNode, start: int, wanted: Callable[[SentPacket], bool],
                    timeout: float) -> SentPacket:
    """Poll (fast: the kill must land before the fragment's ACK) for a new record that `wanted` accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for packet in node.sent[start:]:
            if wanted(packet):
                return packet
        time.sleep(0.002)
    raise AssertionError(f"no such fragment within {timeout:.0f}s; sent: {[p.text for p in node.sent]}")


@pytest.mark.model
@pytest.mark.slow
def test_a_daemon_killed_mid_reply_resumes_and_answers_every_question_once(tmp_path: Path) -> None:
    node = VirtualNode(BOT_NUM, short_name="BOT", modem_preset="SHORT_TURBO", region="US", peers=PEERS,
                       ack_delay_s=1.5)  # slow ACKs: each fragment is in flight long enough to be killed under
    # Four 60-byte fragments: about 155 tokens, some seconds of generation, so fragment 2 usually
    # leaves while the model is still writing (a resumed query must then skip fragment 1).
    sections = {"model": {"seed": 7, "threads": 1},
                "mesh": {"min_gap_s": 2.0, "max_fragment_bytes": 60, "max_fragments": 4},
                "radio": {"connect_timeout_s": 20}}
    with node, DaemonProcess(tmp_path, f"127.0.0.1:{node.port}", sections) as proc:
        proc.start()
        questions = [(PEER_NUMS[i], 500 + i) for i in range(len(KILL_QUESTIONS))]
        for (sender, packet_id), text in zip(questions, KILL_QUESTIONS):
            node.inject_text(sender, text, packet_id=packet_id)
        kills: list[list[SentPacket]] = []
        killed_at: set[tuple[int, int | None]] = set()
        mid_generation = False
        # First right after fragment 2 of the first reply, then twice right after a reply's first fragment.
        plans = [lambda p: fragment_index(p.text) == (2, False), lambda p: fragment_index(p.text)[0] == 1,
                 lambda p: fragment_index(p.text)[0] == 1]
        for plan in plans:
            start = len(kills[-1]) if kills else 0
            target = wait_for_record(node, start, lambda p: plan(p) and (p.to, p.reply_id) not in killed_at, 90)
            proc.kill()
            kills.append(node.sent)
            killed_at.add((target.to, target.reply_id))
            assert kills[-1][-1].outcome == "PENDING", "the kill came too late: the fragment was already ACKed"
            if len(kills) == 1:  # no "answered" yet: the model was still writing the first reply
                mid_generation = not any(e.get("event") == "answered" for e in proc.events())
            proc.start()
        wait_until(lambda: answered_on_air(node.sent, questions, 4), timeout=180)
        time.sleep(3.0)  # a quiet spell: anything sent now would be a repeat
        assert proc.stop() == 0
    sent = node.sent
    result = audit(sent, questions, 4, kill_knowledge(sent, kills))
    events = proc.events()
    resumed = sum(e.get("event") == "resumed" for e in events)
    skipped = sum(e.get("event") == "skipped-delivered" for e in events)
    print(f"3 kills: {len(result.complete)} questions answered, {result.resent_in_flight} fragment(s) resent "
          f"in flight, {len(result.duplicates)} duplicate(s), {resumed} resumed, {skipped} delivered fragment(s) "
          f"skipped on regeneration (killed mid-generation: {mid_generation}), {len(sent)} sends")
    result.assert_clean()
    assert resumed >= 3, "each restart should have resumed the unfinished replies"
    if mid_generation:  # the resumed query was written again, and its delivered fragment 1 not resent
        assert skipped >= 1
    with Store(proc.store_path) as store:
        assert store.unfinished() == []


# -- 2. the TCP link dropped 20 times under load ------------------------------------------------
@pytest.mark.slow
def test_twenty_dropped_links_under_load_lose_no_question_and_repeat_no_answer(
        bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    # ACKs take 0.1 s (2 s simulated), so the sender is often waiting on one when the link drops. The
    # queue may hold the whole load: this is about the link, not about refusing a busy node.
    b = bench(ack_delay_s=0.1, **{"queue.max_per_node": 60, "queue.max_depth": 64})
    b.model.queue(*[LONG_ANSWER[: 150 + 7 * k] for k in range(60)])  # 1 or 2 fragments each
    daemon = b.start_daemon()
    rng = random.Random(20)
    questions: list[tuple[int, int]] = []
    for k in range(20):
        before = b.node.handshakes
        wait_until(lambda: b.settled(daemon, before), timeout=20)
        for n in range(2):
            questions.append(b.ask(PEER_NUMS[(k + n) % 6], 1000 + 10 * k + n, f"question {k}.{n} before drop"))
        time.sleep(rng.uniform(0.5, 1.0))
        assert b.node.drop_client(reset=True)
        questions.append(b.ask(PEER_NUMS[(k + 3) % 6], 2000 + k, f"question {k} while down"))
        wait_until(lambda: b.node.handshakes > before, timeout=20)
    wait_until(answered(b, questions), timeout=90)
    wait_until(daemon.idle, timeout=20)
    sent = b.node.sent
    result = audit(sent, questions, b.cfg.mesh.max_fragments, log_order_knowledge(sent, caplog.records))
    print(f"20 drops: {len(result.complete)} questions answered, {result.resent_in_flight} fragment(s) resent "
          f"in flight, {len(result.duplicates)} duplicate(s), {b.node.handshakes} handshakes, {len(sent)} sends")
    result.assert_clean()
    assert len(result.complete) == 60
    assert daemon.store.unfinished() == []
    assert b.node.handshakes >= 21


def test_a_reply_racing_a_dropped_link_waits_for_the_new_link_and_is_delivered(
        bench, caplog: pytest.LogCaptureFixture) -> None:
    """The link drops; before the library's "connection lost" event is handled, a reply is sent.

    A slow handler on the library's one publishing thread (mesh-facts: "a slow handler stalls all
    radio events") holds that event back, so the race is not left to chance.
    """
    caplog.set_level(logging.INFO, logger="meshbot")
    b = bench()
    b.model = GatedModel()
    b.model.queue(LONG_ANSWER[:300])
    daemon = b.start_daemon()
    wait_until(lambda: b.settled(daemon), timeout=20)
    question = b.ask(PEER_NUMS[0], 4000, "a question answered across a drop")
    wait_until(lambda: len(events(caplog, "queued")) == 1, timeout=20)  # the model is now writing, slowly
    slow_handler = threading.Event()
    publishingThread.queueWork(lambda: slow_handler.wait(10))
    old_link = getattr(daemon.radio, "_iface")  # the library's interface: its own connected flag
    assert b.node.drop_client(reset=True)
    wait_until(lambda: not old_link.isConnected.is_set(), timeout=5)  # the library saw the reset
    b.model.gate.set()  # the reply is ready, and goes to the sender, while the loss is still unreported
    time.sleep(1.0)
    slow_handler.set()
    # Reconnecting and sending take well under a second; the library's own wait on the dead link is 30 s.
    wait_until(answered(b, [question]), timeout=10)
    assert not events(caplog, "dropped")


# -- 3. re-delivered packets: after a reconnect, and after a restart on the same store ---------
def test_redelivered_packets_get_no_second_answer_after_a_reconnect_or_a_restart(
        bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b = bench(ack_delay_s=0.1)
    b.model.queue(*[LONG_ANSWER[: 150 + 7 * k] for k in range(11)])
    daemon = b.start_daemon()
    wait_until(lambda: b.settled(daemon), timeout=20)
    texts = {(PEER_NUMS[k % 5], 3000 + k): f"redelivery question {k}" for k in range(10)}
    for (sender, packet_id), text in texts.items():
        b.ask(sender, packet_id, text)
    wait_until(lambda: len(b.node.sent) >= 3, timeout=20)  # drop while replies are still going out
    before = b.node.handshakes
    assert b.node.drop_client(reset=True)
    wait_until(lambda: b.node.handshakes > before and b.settled(daemon, before + 1), timeout=20)
    for (sender, packet_id), text in texts.items():  # the node hands the last 10 packets over again
        b.ask(sender, packet_id, text)
    wait_until(lambda: len(events(caplog, "ignored", "duplicate")) >= 10, timeout=20)
    wait_until(answered(b, texts), timeout=60)
    wait_until(daemon.idle, timeout=20)
    after_reconnect = len(b.node.sent)

    b.stop_daemon(daemon)
    daemon = b.start_daemon()  # same store file
    wait_until(lambda: b.settled(daemon), timeout=20)
    for (sender, packet_id), text in texts.items():
        b.ask(sender, packet_id, text)
    wait_until(lambda: len(events(caplog, "ignored", "duplicate")) >= 20, timeout=20)
    fresh = b.ask(PEER_NUMS[7], 3999, "a new question after the restart")
    wait_until(answered(b, [fresh]), timeout=30)  # the daemon does send: silence above was no accident
    wait_until(daemon.idle, timeout=20)

    sent = b.node.sent
    assert [p.reply_id for p in sent[after_reconnect:]] == [fresh[1]] * (len(sent) - after_reconnect)
    result = audit(sent, [*texts, fresh], b.cfg.mesh.max_fragments, log_order_knowledge(sent, caplog.records))
    result.assert_clean()
    assert len(events(caplog, "queued")) == 11


# -- 4. a flood from one node while five others ask once ----------------------------------------
FLOODER = PEER_NUMS[7]


class GatedModel(FakeModel):
    """Holds its first answer until `gate` opens: a slow model, while the flood arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        """Wait for the gate (real time), then answer as FakeModel does."""
        self.gate.wait(30)
        yield from super().stream(request, stats)


def test_a_flooding_node_gets_its_fair_share_and_one_notice(clock: VirtualClock, radio: FakeRadio,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    cfg = load_config(overrides={"limits.per_node_burst": 5, "queue.max_per_node": 5}, environ={})
    model = GatedModel()
    daemon = Daemon(cfg, radio, model, clock, store=Store(":memory:"))
    daemon.start()
    try:
        others = {PEER_NUMS[i]: 100 * (i + 1) for i in range(5)}  # node -> its one question's id
        asks_at = {10 + 15 * i: node for i, node in enumerate(others)}  # the five ask 9 s apart
        injected = 0
        for k in range(100):  # 100 messages in a minute, with the five questions among them
            clock.advance(0.6)
            radio.receive(dm(f"flood message number {k}", sender=FLOODER, packet_id=9000 + k))
            injected += 1
            if k in asks_at:
                node = asks_at[k]
                radio.receive(dm(f"my one question, from node {node:x}", sender=node, packet_id=others[node]))
                injected += 1
            wait_until(lambda: decisions(caplog) == injected, timeout=5)  # judged in this order
        model.gate.set()
        wait_until(lambda: daemon.idle() and len(radio.sent) >= 11, timeout=20)
    finally:
        daemon.stop(grace_s=1.0)
    replies = [s.message for s in radio.sent]
    answer_order = list(dict.fromkeys(m.reply_id for m in replies if m.reply_id is not None))
    flood_answers = [pos for pos, rid in enumerate(answer_order) if rid >= 9000]
    assert sorted(set(answer_order) & set(others.values())) == sorted(others.values()), "one of the five was lost"
    assert len(flood_answers) == cfg.limits.per_node_burst  # the flooder's accepted ones are answered too
    # Round-robin: while the flooder waits with four more, each of the five is answered before its third.
    assert all(answer_order.index(pid) < flood_answers[2] for pid in others.values()), answer_order
    minutes = math.ceil(3600 / cfg.limits.per_node_per_hour / 60)  # one token back, as the notice says
    assert [m.text for m in replies if m.dest == FLOODER and m.reply_id is None] == [
        cfg.limits.notice.format(minutes=minutes)]
    assert len(events(caplog, "ignored", "node-rate")) == 100 - cfg.limits.per_node_burst


def decisions(caplog: pytest.LogCaptureFixture) -> int:
    """Packets the daemon has judged so far."""
    return sum(getattr(r, "event", None) in ("queued", "ignored", "dropped", "admin") for r in caplog.records)


# -- 5. admin commands ---------------------------------------------------------------------------
ADMIN, USER = PEER_NUMS[0], PEER_NUMS[1]


@pytest.fixture
def admin_bench(bench) -> Bench:
    b = bench(**{"limits.admins": [f"!{ADMIN:08x}"]})
    b.start_daemon()
    wait_until(lambda: b.settled(b.daemons[0]), timeout=20)
    return b


def command_replies(b: Bench, dest: int) -> list[str | None]:
    """What the bot sent `dest` that answers no question: command replies and notices."""
    return [p.text for p in b.node.sent if p.to == dest and p.reply_id is None]


def test_pause_from_a_non_admin_a_channel_or_the_models_own_answer_changes_nothing(
        admin_bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b, node = admin_bench, admin_bench.node
    b.model.queue("LoRa is a radio.", "!pause", "Still here.")
    b.ask(USER, 1, "!pause")  # not an admin: nothing happens, not even a reply
    q2 = b.ask(USER, 2, "what is lora?")
    wait_until(answered(b, [q2]), timeout=20)
    q3 = b.ask(ADMIN, 3, "say the pause command")  # the model answers "!pause": that is only text
    wait_until(answered(b, [q3]), timeout=20)
    node.inject_text(BOT_NUM, "!pause", to=limits.BROADCAST_NUM, packet_id=4)  # our own words heard back
    node.inject_text(ADMIN, "!ai !pause", to=limits.BROADCAST_NUM, packet_id=5)  # an admin, but on a channel
    node.inject_text(ADMIN, "!pause", to=limits.BROADCAST_NUM, packet_id=6)
    q7 = b.ask(USER, 7, "are you still there?")
    wait_until(answered(b, [q7]), timeout=20)
    assert not b.daemons[0].paused.is_set()
    assert [p.text for p in node.sent if p.reply_id == 3] == ["!pause"]
    assert [command_replies(b, n) for n in (USER, ADMIN, limits.BROADCAST_NUM)] == [[], [], []]
    assert sorted(r.reason for r in events(caplog, "ignored")) == ["admin-only", "admin-only", "no-trigger",
                                                                    "own-packet"]
    audit(node.sent, [q2, q3, q7], 3, log_order_knowledge(node.sent, caplog.records)).assert_clean()


def test_an_admins_pause_by_dm_holds_questions_until_resume_and_stats_counts_them(
        admin_bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b, daemon = admin_bench, admin_bench.daemons[0]
    b.model.queue("One.", "Two.", "Answered after resume.")
    done = [b.ask(USER, 1, "first question"), b.ask(ADMIN, 2, "second question")]
    wait_until(answered(b, done), timeout=20)
    b.ask(ADMIN, 3, "!pause")
    wait_until(lambda: len(command_replies(b, ADMIN)) == 1 and daemon.paused.is_set(), timeout=20)
    held = b.ask(USER, 4, "a question while paused")
    wait_until(lambda: len(events(caplog, "queued")) == 3, timeout=20)
    time.sleep(1.0)  # 20 s simulated: a running worker would have answered by now
    assert not any(p.reply_id == held[1] for p in b.node.sent)
    assert [(q.sender, q.packet_id) for q in daemon.store.unfinished()] == [held]  # kept, and durable
    b.ask(ADMIN, 5, "!stats")
    wait_until(lambda: len(command_replies(b, ADMIN)) == 2, timeout=20)
    stats = command_replies(b, ADMIN)[1] or ""
    assert stats.startswith("queue 1, last hour: 2 answered, 0 failed, 0 dropped") and stats.endswith("paused")
    b.ask(ADMIN, 6, "!resume")
    wait_until(answered(b, [held]), timeout=20)
    paused_reply, _, resumed_reply = command_replies(b, ADMIN)
    assert (paused_reply or "").startswith("Paused") and resumed_reply == "Resumed."
    assert not daemon.paused.is_set()
    audit(b.node.sent, [*done, held], 3, log_order_knowledge(b.node.sent, caplog.records)).assert_clean()
