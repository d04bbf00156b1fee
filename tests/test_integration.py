"""The daemon end to end: the real meshtastic TCPInterface, the virtual node, the real bundled model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshbot.core.fragmenter import looks_like_meshbot_output, strip_numbering
from meshbot.core.limits import BROADCAST_NUM, TEXT_RATE_LIMIT_S
from meshbot.service.daemon import Daemon
from meshbot.sim.node.node import VirtualNode
from tests.conftest import wait_until

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


def settle(node: VirtualNode, daemon: Daemon, at_least: int) -> list:
    wait_until(lambda: len(node.sent) >= at_least and daemon.idle(), timeout=120)
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
        heads = [p.text.split(" ", 1)[0] for p in sent]
        assert heads[:-1] == [f"{i}/+" for i in range(1, len(sent))]
        assert all(strip_numbering(p.text) != p.text for p in sent)  # every one numbered
        # Another meshbot hearing these would refuse every "k/+" one as a bot's, not a person's.
        assert all(looks_like_meshbot_output(p.text, 200) for p in sent[:-1])
    gaps = [b.at - a.at for a, b in zip(sent, sent[1:], strict=False)]
    assert all(gap >= TEXT_RATE_LIMIT_S for gap in gaps), gaps


def test_a_channel_question_with_the_trigger_is_answered_on_the_channel(node: VirtualNode, daemon: Daemon) -> None:
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
    heads = [p.text.split(" ", 1)[0] for p in sent]
    assert heads.count("1/+") <= 1
