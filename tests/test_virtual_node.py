"""The virtual node, driven by the real, unmodified meshtastic TCPInterface (and a raw socket client)."""

from __future__ import annotations

import logging
import queue
import socket
import time
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshtastic.protobuf import channel_pb2, config_pb2, mesh_pb2, portnums_pb2
from meshtastic.tcp_interface import TCPInterface
from pubsub import pub

from meshbot import limits
from meshbot.clock import VirtualClock
from meshbot.sim import ACK, SentPacket, VirtualNode, format_handset_line, format_sent
from meshbot.sim import firmware as fw
from meshbot.sim.framing import FrameDecoder, encode_frame

BOT = 0x0B07B07A
ALICE = 0xA11CE001
BOB = 0x0B0B0002
PEERS = [(ALICE, "Alice Handheld", "ALI"), (BOB, "Bob Base", "BOB")]
WAIT = 5.0  # real seconds a test waits for something that normally takes milliseconds

# pypubsub holds listeners weakly and is global: module-level functions feeding queues.
_texts: queue.Queue = queue.Queue()
_lost: queue.Queue = queue.Queue()


def _on_text(packet: dict, interface: object) -> None:
    _texts.put(packet)


def _on_lost(interface: object) -> None:
    _lost.put(interface)


@pytest.fixture
def listeners() -> Iterator[None]:
    for q in (_texts, _lost):
        while not q.empty():
            q.get_nowait()
    pub.subscribe(_on_text, "meshtastic.receive.text")
    pub.subscribe(_on_lost, "meshtastic.connection.lost")
    yield
    pub.unsubscribe(_on_text, "meshtastic.receive.text")
    pub.unsubscribe(_on_lost, "meshtastic.connection.lost")


@pytest.fixture
def clock() -> VirtualClock:
    # Only the test moves it, so the 2 s text rate limit is deterministic.
    return VirtualClock(start=1000.0)


@pytest.fixture
def node(clock: VirtualClock) -> Iterator[VirtualNode]:
    with VirtualNode(
        BOT, peers=PEERS, clock=clock, modem_preset="MEDIUM_FAST", region="EU_868", hop_limit=5, retransmit_s=0.1
    ) as n:
        yield n


@pytest.fixture
def connect(listeners: None) -> Iterator:
    made: list[TCPInterface] = []

    def _connect(n: VirtualNode, *, no_nodes: bool = False) -> TCPInterface:
        iface = TCPInterface(hostname="127.0.0.1", portNumber=n.port, noNodes=no_nodes, timeout=10)
        made.append(iface)
        settled(iface)
        return iface

    yield _connect
    for iface in made:
        iface.close()


def settled(iface: TCPInterface) -> None:
    """Wait until the library's first heartbeat was answered: it writes that from its reader
    thread right after the config download, so a drop before then races with that write."""
    deadline = time.monotonic() + WAIT
    while iface.queueStatus is None:
        assert time.monotonic() < deadline, "the node never answered the heartbeat"
        time.sleep(0.01)


class Responses:
    """Collects onResponse callbacks; the method name lets the library pass plain ACKs too."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def onAckNak(self, packet: dict) -> None:  # noqa: N802 - the library matches this name
        self.q.put(packet)

    def next(self) -> dict:
        return self.q.get(timeout=WAIT)


def error_of(response: dict) -> str:
    return response["decoded"]["routing"].get("errorReason", "NONE")


class RawClient:
    """A bare stream-protocol client, for what the library will not send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.decoder = FrameDecoder()
        self.received: list[mesh_pb2.FromRadio] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: mesh_pb2.ToRadio) -> None:
        self.send_raw(encode_frame(message.SerializeToString()))

    def read_until(self, done, timeout: float = WAIT) -> list[mesh_pb2.FromRadio]:
        deadline = time.monotonic() + timeout
        while not any(done(m) for m in self.received):
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("node closed the connection")
            for payload in self.decoder.feed(data):
                message = mesh_pb2.FromRadio()
                message.ParseFromString(payload)
                self.received.append(message)
        return self.received

    def handshake(self, nonce: int = 4242) -> list[mesh_pb2.FromRadio]:
        self.send_raw(bytes([limits.STREAM_START2] * 32))
        self.send(mesh_pb2.ToRadio(want_config_id=nonce))
        return self.read_until(lambda m: m.config_complete_id == nonce)

    def closed_by_node(self, timeout: float = WAIT) -> bool:
        """True once the node closes the connection; raises TimeoutError if it stays open."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_clients() -> Iterator:
    made: list[RawClient] = []

    def _make(n: VirtualNode) -> RawClient:
        client = RawClient(n.port)
        made.append(client)
        return client

    yield _make
    for client in made:
        client.close()


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
    node.inject_text(ALICE, "é".encode("utf-8")[:1] + b"abc")

    got = _texts.get(timeout=WAIT)
    assert "text" not in got["decoded"]
    assert got["decoded"]["payload"] == b"\xc3abc"
    assert "Malformatted" in caplog.text


def test_packets_heard_while_no_client_wait_for_the_next_one(node, connect):
    node.inject_text(ALICE, "anyone there?")
    connect(node)
    assert _texts.get(timeout=WAIT)["decoded"]["text"] == "anyone there?"


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
        packet_id=sent.id, to=ALICE, channel=0, portnum="TEXT_MESSAGE_APP", payload=b"hi Alice", text="hi Alice",
        want_ack=True, hop_limit=5, reply_id=99, at=clock.now(), outcome=ACK, pki=True,
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


# ----- pure parts: framing, firmware rules, rendering ------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=limits.STREAM_MAX_FRAME_LEN), max_size=5),
    noise=st.lists(st.binary(max_size=8).map(lambda b: b.replace(b"\x94", b"")), min_size=6, max_size=6),
    cut=st.integers(min_value=1, max_value=64),
)
def test_decoder_recovers_every_frame_through_noise_and_any_chunking(payloads, noise, cut):
    stream = bytes([limits.STREAM_START2] * 32) + b"".join(n + encode_frame(p) for n, p in zip(noise, payloads))
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(stream), cut):
        out.extend(decoder.feed(stream[i : i + cut]))
    assert out == payloads


def test_decoder_drops_a_frame_over_512_bytes_and_resyncs():
    decoder = FrameDecoder()
    oversize = bytes([0x94, 0xC3, 0x02, 0x01]) + b"\x00" * 513
    assert decoder.feed(oversize + encode_frame(b"ok")) == [b"ok"]
    assert decoder.dropped_oversize == 1


@given(size=st.integers(min_value=1, max_value=limits.DATA_PAYLOAD_LEN), dm=st.booleans(), reply=st.booleans())
def test_too_large_matches_the_documented_text_limits(size, dm, reply):
    packet = mesh_pb2.MeshPacket(to=ALICE if dm else limits.BROADCAST_NUM)
    packet.decoded.portnum = portnums_pb2.TEXT_MESSAGE_APP
    packet.decoded.payload = b"a" * size
    if reply:
        packet.decoded.reply_id = 0xFFFFFFFF
    limit = {
        (False, False): limits.MAX_TEXT_BYTES_CHANNEL,
        (False, True): limits.MAX_TEXT_BYTES_CHANNEL_WITH_REPLY_ID,
        (True, False): limits.MAX_TEXT_BYTES_DM,
        (True, True): limits.MAX_TEXT_BYTES_DM_WITH_REPLY_ID,
    }[(dm, reply)]
    assert fw.too_large(packet, pki=fw.uses_pki(packet, dest_has_key=True)) == (size > limit)
    assert fw.frame_len_on_air(packet, pki=dm) == limits.text_frame_len(size, reply_id=reply, pki=dm)


@given(gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=20))
def test_rate_limiter_admits_texts_at_least_two_seconds_apart(gaps):
    limiter = fw.TextRateLimiter()
    now, admitted = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.admit(now):
            admitted.append(now)
    assert all(b - a >= limits.TEXT_RATE_LIMIT_S for a, b in zip(admitted, admitted[1:]))
    assert bool(gaps) == bool(admitted)  # the first text always goes


def test_handset_line_shows_sender_hops_text_and_size():
    line = format_handset_line(
        at=time.mktime((2024, 1, 1, 12, 0, 3, 0, 1, -1)), sender="BOT", recipient="you", text="1/+ text…", hops=2
    )
    assert line == "[12:00:03] BOT → you (2 hops): 1/+ text… (11 B)"
    record = SentPacket(
        1, limits.BROADCAST_NUM, 0, "TEXT_MESSAGE_APP", b"x" * 233, "x" * 233, False, 3, None, 0.0, "TOO_LARGE"
    )
    assert format_sent(record, at=0.0, max_chars=10).endswith(": xxxxxxxxx… (233 B) [TOO_LARGE]")
