"""The virtual node and the real meshtastic TCPInterface: connecting, packets to the client, the stream, reconnects."""

from __future__ import annotations

import logging
import socket

import pytest
from meshtastic.protobuf import channel_pb2, config_pb2, mesh_pb2, portnums_pb2
from meshtastic.tcp_interface import TCPInterface

from meshbot.core import limits
from meshbot.sim import VirtualNode
from meshbot.sim.rules import firmware as fw
from meshbot.sim.rules.framing import encode_frame
from tests.virtual_node_support import ALICE, BOB, BOT, WAIT, _lost, _texts, settled
from tests.virtual_node_support import clock as clock  # pytest fixtures: "x as x" marks them as imported on purpose
from tests.virtual_node_support import connect as connect
from tests.virtual_node_support import listeners as listeners
from tests.virtual_node_support import node as node
from tests.virtual_node_support import raw_clients as raw_clients

# ----- connecting --------------------------------------------------------------------------


def test_library_connects_and_sees_the_node_its_config_and_its_peers(node, connect, caplog):
    iface = connect(node)

    assert iface.myInfo.my_node_num == BOT
    lora = iface.localNode.localConfig.lora
    assert lora.modem_preset == config_pb2.Config.LoRaConfig.ModemPreset.Value("MEDIUM_FAST")
    assert lora.region == config_pb2.Config.LoRaConfig.RegionCode.Value("EU_868")
    assert lora.hop_limit == 5
    assert iface.getShortName() == "BOT"
    assert iface.nodes["!a11ce001"]["user"]["longName"] == "Alice Handheld"
    assert set(iface.nodesByNum) == {BOT, ALICE, BOB}
    assert iface.localNode.channels[0].role == channel_pb2.Channel.Role.PRIMARY
    assert iface.metadata.hasPKC
    # The heartbeat sent on connect was answered with the TX queue status (see `settled`).
    assert iface.queueStatus.maxlen == limits.TX_QUEUE_SLOTS
    assert node.client_connected and node.handshakes == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_no_nodes_connect_skips_other_nodes(node, connect):
    iface = connect(node, no_nodes=True)
    assert set(iface.nodesByNum) == {BOT}
    assert iface.localNode.localConfig.lora.hop_limit == 5


# ----- packets to the client ---------------------------------------------------------------


def test_injected_dm_arrives_on_the_text_topic(node, connect):
    connect(node)
    packet_id = node.inject_text(ALICE, "what is the weather?", hop_start=3, hop_limit=1)

    got = _texts.get(timeout=WAIT)
    assert (got["from"], got["to"], got["id"]) == (ALICE, BOT, packet_id)
    assert got["decoded"]["text"] == "what is the weather?"
    assert (got["hopStart"], got["hopLimit"]) == (3, 1)
    assert got["fromId"] == "!a11ce001"
    assert "channel" not in got
    assert got["pkiEncrypted"] is True  # a DM from a node whose key we know


def test_injected_broadcast_keeps_channel_reply_id_and_emoji(node, connect):
    connect(node)
    node.inject_text(BOB, "👍", to=limits.BROADCAST_NUM, channel=1, reply_id=77, emoji=1, via_mqtt=True)

    got = _texts.get(timeout=WAIT)
    assert got["to"] == limits.BROADCAST_NUM and got["channel"] == 1
    assert got["decoded"]["replyId"] == 77 and got["decoded"]["emoji"] == 1
    assert got["viaMqtt"] is True
    assert "pkiEncrypted" not in got


def test_invalid_utf8_arrives_without_text(node, connect, caplog):
    connect(node)
    node.inject_text(ALICE, "é".encode()[:1] + b"abc")

    got = _texts.get(timeout=WAIT)
    assert "text" not in got["decoded"]
    assert got["decoded"]["payload"] == b"\xc3abc"
    assert "Malformatted" in caplog.text


def test_packets_heard_while_no_client_wait_for_the_next_one(node, connect):
    node.inject_text(ALICE, "anyone there?")
    connect(node)
    assert _texts.get(timeout=WAIT)["decoded"]["text"] == "anyone there?"


def test_a_dm_heard_on_air_reaches_the_client_once_and_is_acked_over_the_air(node, connect):
    connect(node)
    heard = mesh_pb2.MeshPacket(to=BOT, id=0x3003, want_ack=True, hop_start=3, hop_limit=2)
    setattr(heard, "from", ALICE)
    heard.decoded.portnum = portnums_pb2.TEXT_MESSAGE_APP
    heard.decoded.payload = b"via the mesh"
    node.receive_from_air(heard)
    node.receive_from_air(heard)  # a relayed copy of the same packet

    assert _texts.get(timeout=WAIT)["decoded"]["text"] == "via the mesh"
    [ack] = [p for p in node.air.transmissions if p.decoded.request_id == 0x3003]
    assert (getattr(ack, "from"), ack.to, fw.routing_error_of(ack)) == (BOT, ALICE, "NONE")
    node.inject_text(BOB, "marker")
    assert _texts.get(timeout=WAIT)["decoded"]["text"] == "marker"  # and not the duplicate


def test_the_to_client_queue_keeps_the_newest_packets(node, connect):
    for i in range(fw.MAX_RX_TOPHONE + 3):
        node.inject_text(ALICE, f"msg {i}")
    connect(node)
    got = [_texts.get(timeout=WAIT)["decoded"]["text"] for _ in range(fw.MAX_RX_TOPHONE)]
    assert got == [f"msg {i}" for i in range(3, fw.MAX_RX_TOPHONE + 3)]
    assert _texts.empty()


# ----- the stream itself ---------------------------------------------------------------------


def test_garbage_oversize_frames_and_bad_protobufs_do_not_break_the_node(node, raw_clients, connect):
    client = raw_clients(node)
    client.send_raw(b"\x00\xffhello\r\n\x94\x94")
    client.send_raw(bytes([0x94, 0xC3, 0x02, 0x01]) + b"\x01" * 513)  # over 512: dropped
    client.send_raw(encode_frame(b"\xff\xff\xff\xff"))  # not a ToRadio
    client.send_raw(encode_frame(b""))  # an empty ToRadio
    got = client.handshake(nonce=77)
    assert got[0].my_info.my_node_num == BOT
    client.close()
    assert connect(node).myInfo.my_node_num == BOT


# ----- connections ---------------------------------------------------------------------------


def test_drop_client_makes_the_library_reconnect(node, connect):
    iface = connect(node)
    assert node.drop_client()
    assert node.wait_for_handshakes(2, WAIT)  # the library reconnected on its own after the EOF
    iface.sendText("back again", destinationId=ALICE)
    assert node.wait_for_sent(1, WAIT)[0].text == "back again"


def test_reset_connection_publishes_lost_and_a_new_interface_connects(node, connect):
    first = connect(node)
    assert node.drop_client(reset=True)
    assert _lost.get(timeout=WAIT) is first
    second = connect(node)
    assert second.myInfo.my_node_num == BOT and node.handshakes == 2


def test_a_second_client_kicks_the_first(node, raw_clients, connect):
    first = raw_clients(node)
    first.handshake()
    second = connect(node)
    assert first.closed_by_node()
    assert node.client_connected and node.handshakes == 2
    second.sendText("from the new client", destinationId=ALICE)
    assert node.wait_for_sent(1, WAIT)[0].text == "from the new client"


def test_stop_closes_the_client_and_frees_the_port(clock, listeners):
    n = VirtualNode(BOT, clock=clock)
    n.start()
    iface = TCPInterface(hostname="127.0.0.1", portNumber=n.port, timeout=10)
    try:
        settled(iface)
        n.stop()
        assert _lost.get(timeout=WAIT) is iface  # its one reconnect attempt was refused
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", n.port), timeout=1)
    finally:
        iface.close()
