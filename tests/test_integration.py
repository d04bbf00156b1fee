"""The daemon end to end: the real meshtastic TCPInterface, the virtual node, the real bundled model."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from meshbot.core.fragmenter import looks_like_fragment, looks_like_meshbot_output
from meshbot.core.limits import BROADCAST_NUM, TEXT_RATE_LIMIT_S
from meshbot.service.daemon import Daemon
from meshbot.sim.node.node import VirtualNode
from meshbot.storage.store import QueryState
from tests.conftest import wait_until
from tests.fakes import AI_TAG

pytestmark = [pytest.mark.model, pytest.mark.slow]

BOT = 0x0BB0_0001
ALICE = 0x0A11_CE00


@pytest.fixture
def node() -> Iterator[VirtualNode]:
    vnode = VirtualNode(BOT, short_name="BOT", modem_preset="SHORT_FAST", region="US", peers=[(ALICE, "Alice", "ALI")])
    vnode.start()
    yield vnode
    vnode.stop()


@pytest.fixture
def daemon(node: VirtualNode, real_daemon) -> Daemon:
    return real_daemon(node.port)


def settle(node: VirtualNode, daemon: Daemon, at_least: int, timeout: float = 120) -> list:
    wait_until(lambda: len(node.sent) >= at_least and daemon.idle(), timeout=timeout)
    return node.sent


def test_a_dm_is_answered_in_mesh_sized_fragments(node: VirtualNode, daemon: Daemon) -> None:
    node.inject_text(ALICE, "Explain how LoRa radios work and why they reach so far.", packet_id=101)
    sent = settle(node, daemon, 1)
    assert sent, "the bot sent nothing"
    for packet in sent:
        assert packet.to == ALICE and packet.want_ack and packet.channel == 0
        assert packet.text is not None  # valid UTF-8
        assert len(packet.payload) <= 200
        assert packet.outcome == "ACK"
        assert packet.reply_id == 101
    if len(sent) > 1:
        heads = [p.text.removeprefix(AI_TAG).split(" ", 1)[0] for p in sent]
        assert heads[:-1] == [f"{i}/+" for i in range(1, len(sent))]
        assert all(looks_like_fragment(p.text.removeprefix(AI_TAG)) for p in sent)  # every one numbered
        # Another meshbot hearing these would refuse every one as a bot's: the tag marks them.
        assert all(looks_like_meshbot_output(p.text, 200, AI_TAG.strip()) for p in sent)
    gaps = [b.at - a.at for a, b in zip(sent, sent[1:], strict=False)]
    assert all(gap >= TEXT_RATE_LIMIT_S for gap in gaps), gaps


def test_a_channel_question_with_the_trigger_is_answered_on_the_channel(node: VirtualNode, real_daemon) -> None:
    # The node's channel 0 is the default public one (preset name, default key): enabled on purpose.
    daemon = real_daemon(node.port, **{"policy.channels": [{"index": 0, "public": True}]})
    node.inject_text(ALICE, "nice day on the mesh", to=BROADCAST_NUM, packet_id=201)
    node.inject_text(ALICE, "!ai what is a mesh network?", to=BROADCAST_NUM, packet_id=202)
    sent = settle(node, daemon, 1)
    assert sent and all(p.to == BROADCAST_NUM and p.channel == 0 and not p.want_ack for p in sent)


def test_ignored_packets_get_no_reply(node: VirtualNode, daemon: Daemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="meshbot")
    node.inject_text(ALICE, "👍", emoji=1, packet_id=301)
    node.inject_text(ALICE, b"\xff\xfe\xfd", packet_id=302)
    node.inject_text(BOT, "my own echo", packet_id=303)
    node.inject_text(ALICE, "hello", portnum="PRIVATE_APP", packet_id=304)
    node.inject_text(ALICE, "   ", packet_id=305)
    wait_until(lambda: sum(getattr(r, "event", "") == "ignored" for r in caplog.records) >= 5, timeout=20)
    reasons = sorted(r.reason for r in caplog.records if getattr(r, "event", "") == "ignored")
    assert reasons == sorted(["tapback", "invalid-utf8", "own-packet", "other-port", "empty"])
    assert node.sent == []


def test_a_redelivered_packet_is_answered_once(node: VirtualNode, daemon: Daemon) -> None:
    node.inject_text(ALICE, "Hi!", packet_id=401)
    node.inject_text(ALICE, "Hi!", packet_id=401)
    sent = settle(node, daemon, 1)
    first_reply = {p.reply_id for p in sent}
    assert first_reply == {401}
    heads = [p.text.removeprefix(AI_TAG).split(" ", 1)[0] for p in sent]
    assert heads.count("1/+") <= 1


# Part 1 is cut by the handset's 200-byte cap in mid-sentence; part 2 follows a second later.
PART_1 = (
    "I am planning a three day hike in the mountains next month with two friends and we will carry "
    "handheld radios on a mesh network, and I would like to know how we should place the relay nodes so"
)
PART_2 = "that we stay in touch across the valleys?"


def test_a_two_part_question_gets_one_answer_replying_to_one_packet(node: VirtualNode, daemon: Daemon) -> None:
    assert 180 <= len(PART_1.encode()) <= 200
    node.inject_text(ALICE, PART_1, packet_id=501)
    time.sleep(1.0)
    node.inject_text(ALICE, PART_2, packet_id=502)
    # A long question gets a capped answer, and the model writes on for "more": give a busy CPU time.
    sent = settle(node, daemon, 1, timeout=400)
    assert sent, "the bot sent nothing"
    assert {p.reply_id for p in sent} == {502}  # one answer, threaded to the last part
    heads = [p.text.removeprefix(AI_TAG).split(" ", 1)[0] for p in sent]
    assert heads.count("1/+") <= 1 and all(p.text.startswith(AI_TAG) for p in sent)
    first, joined = daemon.store.get(1), daemon.store.get(2)  # a fresh store: the two parts' rows
    assert first is not None and first.state is QueryState.JOINED
    assert joined is not None and joined.question == f"{PART_1} {PART_2}" and joined.packet_id == 502
