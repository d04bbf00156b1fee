"""Faults: the daemon process killed mid-reply resumes, and answers every question once."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meshbot.sim.node.node import VirtualNode
from meshbot.sim.node.records import SentPacket
from meshbot.storage.store import Store
from tests.conftest import wait_until
from tests.daemon_proc import DaemonProcess
from tests.fakes import BOT_NUM
from tests.faults_support import PEER_NUMS, PEERS, answered_on_air, audit, fragment_index

# -- the daemon process killed mid-reply -----------------------------------------------------
KILL_QUESTIONS = (
    "Explain how LoRa radios reach so far.",
    "What is a mesh network and how does it route?",
    "Why is the sky blue? Explain in detail.",
)


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


def wait_for_record(node: VirtualNode, start: int, wanted: Callable[[SentPacket], bool], timeout: float) -> SentPacket:
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
    node = VirtualNode(
        BOT_NUM, short_name="BOT", modem_preset="SHORT_TURBO", region="US", peers=PEERS, ack_delay_s=1.5
    )  # slow ACKs: each fragment is in flight long enough to be killed under
    # Four 60-byte fragments: about 155 tokens, some seconds of generation, so fragment 2 usually
    # leaves while the model is still writing (a resumed query must then skip fragment 1).
    sections = {
        "model": {"seed": 7, "threads": 1},
        "mesh": {"min_gap_s": 2.0, "max_fragment_bytes": 60, "max_fragments": 4},
        "radio": {"connect_timeout_s": 20},
        # Free answers of several fragments, generated while they go on air: what a kill must land in. (Grounded,
        # the default for this model, sends a whole checked answer or a one-fragment decline.)
        "answers": {"mode": "open", "reference": False},
    }
    with node, DaemonProcess(tmp_path, f"127.0.0.1:{node.port}", sections) as proc:
        proc.start()
        questions = [(PEER_NUMS[i], 500 + i) for i in range(len(KILL_QUESTIONS))]
        for (sender, packet_id), text in zip(questions, KILL_QUESTIONS, strict=False):
            node.inject_text(sender, text, packet_id=packet_id)
        kills: list[list[SentPacket]] = []
        killed_at: set[tuple[int, int | None]] = set()
        mid_generation = False
        # First right after fragment 2 of the first reply, then twice right after a reply's first fragment.
        plans = [
            lambda p: fragment_index(p.text) == (2, False),
            lambda p: fragment_index(p.text)[0] == 1,
            lambda p: fragment_index(p.text)[0] == 1,
        ]
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
    print(
        f"3 kills: {len(result.complete)} questions answered, {result.resent_in_flight} fragment(s) resent "
        f"in flight, {len(result.duplicates)} duplicate(s), {resumed} resumed, {skipped} delivered fragment(s) "
        f"skipped on regeneration (killed mid-generation: {mid_generation}), {len(sent)} sends"
    )
    result.assert_clean()
    assert resumed >= 3, "each restart should have resumed the unfinished replies"
    if mid_generation:  # the resumed query was written again, and its delivered fragment 1 not resent
        assert skipped >= 1
    with Store(proc.store_path) as store:
        assert store.unfinished() == []
