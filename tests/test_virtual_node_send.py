"""What the virtual node does with the client's packets: ACKs, NAKs, size and rate limits, repeats, channels."""

from __future__ import annotations

import queue

import pytest
from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot.core import limits
from meshbot.sim import ACK, SentPacket
from meshbot.sim.rules import firmware as fw
from tests.virtual_node_support import ALICE, BOB, BOT, WAIT
from tests.virtual_node_support import clock as clock  # pytest fixtures: "x as x" marks them as imported on purpose
from tests.virtual_node_support import connect as connect
from tests.virtual_node_support import listeners as listeners
from tests.virtual_node_support import node as node
from tests.virtual_node_support import raw_clients as raw_clients


class Responses:
    """Collects onResponse callbacks; the method name lets the library pass plain ACKs too."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def onAckNak(self, packet: dict) -> None:
        self.q.put(packet)

    def next(self) -> dict:
        return self.q.get(timeout=WAIT)


def error_of(response: dict) -> str:
    return response["decoded"]["routing"].get("errorReason", "NONE")


def text_packet(to: int, payload: bytes, packet_id: int, *, reply_id: int | None = None) -> mesh_pb2.ToRadio:
    message = mesh_pb2.ToRadio()
    message.packet.to = to
    message.packet.id = packet_id
    message.packet.want_ack = True
    message.packet.hop_limit = 3
    message.packet.decoded.portnum = portnums_pb2.TEXT_MESSAGE_APP
    message.packet.decoded.payload = payload
    if reply_id is not None:
        message.packet.decoded.reply_id = reply_id
    return message


# ----- packets from the client -------------------------------------------------------------


def test_dm_with_want_ack_is_recorded_and_acked_by_the_destination(node, connect, clock):
    iface = connect(node)
    responses = Responses()
    sent = iface.sendText("hi Alice", destinationId=ALICE, wantAck=True, onResponse=responses.onAckNak, replyId=99)

    ack = responses.next()
    assert ack["from"] == ALICE and ack["decoded"]["requestId"] == sent.id
    assert error_of(ack) == "NONE"
    [record] = node.wait_for_sent(1, WAIT)
    assert record == SentPacket(
        packet_id=sent.id,
        to=ALICE,
        channel=0,
        portnum="TEXT_MESSAGE_APP",
        payload=b"hi Alice",
        text="hi Alice",
        want_ack=True,
        hop_limit=5,
        reply_id=99,
        at=clock.now(),
        outcome=ACK,
        pki=True,
        frame_len=fw.frame_len_on_air(sent, pki=True),
    )


def test_broadcast_with_want_ack_gets_an_implicit_ack_from_our_own_node(node, connect):
    iface = connect(node)
    responses = Responses()
    sent = iface.sendText("hello mesh", wantAck=True, onResponse=responses.onAckNak)

    ack = responses.next()
    assert ack["from"] == BOT and ack["decoded"]["requestId"] == sent.id
    assert error_of(ack) == "NONE"
    assert node.wait_for_sent(1, WAIT)[0].outcome == ACK
    on_air = node.air.transmissions[-1]
    assert on_air.want_ack is False and on_air.hop_start == 5  # firmware clears want_ack on broadcasts


def test_dm_to_an_unreachable_node_ends_in_max_retransmit(node, connect):
    node.air.unreachable.add(BOB)
    iface = connect(node)
    responses = Responses()
    sent = iface.sendText("are you there?", destinationId=BOB, wantAck=True, onResponse=responses.onAckNak)

    nak = responses.next()
    assert nak["from"] == BOT and nak["decoded"]["requestId"] == sent.id
    assert error_of(nak) == "MAX_RETRANSMIT"
    assert [p.id for p in node.air.transmissions] == [sent.id] * limits.MAX_RETRANSMIT
    assert node.wait_for_sent(1, WAIT)[0].outcome == "MAX_RETRANSMIT"


def test_the_library_refuses_payloads_over_233_bytes(node, connect):
    iface = connect(node)
    with pytest.raises(Exception, match="Data payload too big"):
        iface.sendText("x" * (limits.DATA_PAYLOAD_LEN + 1))
    assert node.sent == []


def test_texts_over_the_lora_frame_are_naked_too_large(node, connect, clock):
    iface = connect(node)
    responses = Responses()
    results = []
    cases = [
        (limits.BROADCAST_NUM, limits.MAX_TEXT_BYTES_CHANNEL),
        (limits.BROADCAST_NUM, limits.DATA_PAYLOAD_LEN),  # the library lets 233 through; the LoRa frame can't
        (ALICE, limits.MAX_TEXT_BYTES_DM),
        (ALICE, limits.MAX_TEXT_BYTES_DM + 1),  # PKI adds 12 bytes to a DM
    ]
    for dest, size in cases:
        sent = iface.sendText("y" * size, destinationId=dest, wantAck=True, onResponse=responses.onAckNak)
        results.append((sent.id, error_of(responses.next())))
        clock.advance(limits.TEXT_RATE_LIMIT_S)
    assert [error for _, error in results] == ["NONE", "TOO_LARGE", "NONE", "TOO_LARGE"]
    assert [p.outcome for p in node.wait_for_sent(4, WAIT)] == [ACK, "TOO_LARGE", ACK, "TOO_LARGE"]
    assert [p.frame_len for p in node.sent] == [255, 256, 255, 256]


def test_crafted_toradio_just_over_the_limit_gets_too_large_and_queue_status(node, raw_clients):
    client = raw_clients(node)
    client.handshake()
    # 227 text bytes fit on a channel with a reply_id; 228 do not.
    too_long = b"z" * (limits.MAX_TEXT_BYTES_CHANNEL_WITH_REPLY_ID + 1)
    client.send(text_packet(limits.BROADCAST_NUM, too_long, 0x1001, reply_id=5))

    got = client.read_until(lambda m: m.HasField("packet") and m.packet.decoded.request_id == 0x1001)
    [status] = [m.queueStatus for m in got if m.HasField("queueStatus") and m.queueStatus.mesh_packet_id == 0x1001]
    assert status.res == mesh_pb2.Routing.Error.Value("TOO_LARGE")
    nak = got[-1].packet
    assert getattr(nak, "from") == BOT and fw.routing_error_of(nak) == "TOO_LARGE"
    assert node.wait_for_sent(1, WAIT)[0].outcome == "TOO_LARGE"


def test_second_text_within_two_seconds_is_rate_limited(node, connect, clock):
    iface = connect(node)
    responses = Responses()
    iface.sendText("one", destinationId=ALICE, wantAck=True, onResponse=responses.onAckNak)
    assert error_of(responses.next()) == "NONE"
    clock.advance(0.1)
    second = iface.sendText("two", destinationId=ALICE, wantAck=True, onResponse=responses.onAckNak)
    nak = responses.next()
    clock.advance(limits.TEXT_RATE_LIMIT_S)
    iface.sendText("three", destinationId=ALICE, wantAck=True, onResponse=responses.onAckNak)

    assert (nak["from"], nak["decoded"]["requestId"], error_of(nak)) == (BOT, second.id, "RATE_LIMIT_EXCEEDED")
    assert error_of(responses.next()) == "NONE"
    assert [p.outcome for p in node.wait_for_sent(3, WAIT)] == [ACK, "RATE_LIMIT_EXCEEDED", ACK]
    assert node.air.transmissions[-1].decoded.payload == b"three"


def test_a_repeated_packet_id_is_ignored(node, raw_clients):
    client = raw_clients(node)
    client.handshake()
    client.send(text_packet(ALICE, b"once", 0x2002))
    client.read_until(lambda m: m.HasField("packet") and m.packet.decoded.request_id == 0x2002)
    client.send(text_packet(ALICE, b"once", 0x2002))
    client.send(mesh_pb2.ToRadio(heartbeat=mesh_pb2.Heartbeat()))
    client.read_until(lambda m: m.HasField("queueStatus") and m.queueStatus.mesh_packet_id == 0)
    assert len(node.sent) == 1


def test_a_send_on_a_disabled_channel_is_naked_no_channel(node, connect):
    iface = connect(node)
    responses = Responses()
    sent = iface.sendText("secret", channelIndex=1, onResponse=responses.onAckNak)
    nak = responses.next()
    assert (nak["decoded"]["requestId"], error_of(nak)) == (sent.id, "NO_CHANNEL")
