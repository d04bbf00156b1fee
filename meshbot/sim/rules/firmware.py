"""Pure firmware rules the virtual node applies to what its client sends. No I/O, no threads.

Each rule names the firmware source it mirrors (firmware 2.7.x, `src/mesh/`).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot.core import limits
from meshbot.core.ids import node_id  # noqa: F401 (re-exported for the simulator)

# PhoneAPI.cpp wasSeenRecently: a client packet id repeated within the last 20 is ignored.
RECENT_CLIENT_IDS = 20
# mesh-pb-constants.h MAX_RX_TOPHONE: packets held for a client that is not listening.
MAX_RX_TOPHONE = 32
# PacketHistory: how many (from, id) pairs a node remembers to drop flooded duplicates.
PACKET_HISTORY_LEN = 256
# Router.cpp generatePacketId: the low 10 bits count, the upper 22 are random.
ID_COUNTER_MASK = 0x3FF
# Router.cpp perhapsEncode: ports never sent PKI-encrypted.
NON_PKI_PORTS = frozenset(
    {
        portnums_pb2.TRACEROUTE_APP,
        portnums_pb2.NODEINFO_APP,
        portnums_pb2.ROUTING_APP,
        portnums_pb2.POSITION_APP,
    }
)
# The ports PhoneAPI rate-limits as text, and the ones the Python library decodes as text.
TEXT_PORTS = frozenset({portnums_pb2.TEXT_MESSAGE_APP, portnums_pb2.RANGE_TEST_APP, portnums_pb2.DETECTION_SENSOR_APP})
OK = "NONE"  # Routing.Error NONE: the name used for "no error"


def error_code(name: str) -> int:
    """Routing.Error value of a name such as ``TOO_LARGE``."""
    return mesh_pb2.Routing.Error.Value(name)


def port_name(portnum: int) -> str:
    """PortNum name, or the number as text for a port this library does not know."""
    try:
        return portnums_pb2.PortNum.Name(portnum)
    except ValueError:
        return str(portnum)


def is_broadcast(num: int) -> bool:
    """True for the broadcast address."""
    return num == limits.BROADCAST_NUM


def data_len_on_air(decoded: mesh_pb2.Data) -> int:
    """Encoded Data bytes as the firmware measures them, after it adds its `bitfield` to client packets."""
    probe = mesh_pb2.Data()
    probe.CopyFrom(decoded)
    if not probe.HasField("bitfield"):
        probe.bitfield = 0  # presence alone costs the 2 bytes (MeshInterface::perhapsEncode)
    return probe.ByteSize()


def uses_pki(packet: mesh_pb2.MeshPacket, dest_has_key: bool) -> bool:
    """Whether the firmware would PKI-encrypt this client packet (Router.cpp perhapsEncode)."""
    if is_broadcast(packet.to) or not dest_has_key:
        return False
    if packet.channel > 0 and not packet.pki_encrypted:
        return False  # a secondary channel stays on its channel key unless PKI is asked for
    return packet.decoded.portnum not in NON_PKI_PORTS


def is_legacy_dm(packet: mesh_pb2.MeshPacket, node_num: int) -> bool:
    """Router.cpp perhapsDecode's "Rejecting legacy DM": a text to us that was not PKI-encrypted."""
    return (
        packet.to == node_num and not packet.pki_encrypted and packet.decoded.portnum == portnums_pb2.TEXT_MESSAGE_APP
    )


def frame_len_on_air(packet: mesh_pb2.MeshPacket, pki: bool) -> int:
    """Bytes of the LoRa frame the packet would become: header, Data, PKI overhead."""
    frame = limits.LORA_HEADER_LEN + data_len_on_air(packet.decoded)
    return frame + (limits.PKI_OVERHEAD_LEN if pki else 0)


def too_large(packet: mesh_pb2.MeshPacket, pki: bool) -> bool:
    """The firmware's TOO_LARGE test: the frame would exceed the largest LoRa frame."""
    return frame_len_on_air(packet, pki) > limits.MAX_LORA_FRAME_LEN


class TextRateLimiter:
    """PhoneAPI.cpp: a text within `TEXT_RATE_LIMIT_S` of the last accepted one is refused.

    A refused text does not move the window; a new client connection resets it.
    """

    def __init__(self, window_s: float = limits.TEXT_RATE_LIMIT_S) -> None:
        self.window_s = window_s
        self._last: float | None = None

    def admit(self, now: float) -> bool:
        """True (and remember `now`) when a text may go; False when it is rate limited."""
        if self._last is not None and now - self._last < self.window_s:
            return False
        self._last = now
        return True

    def reset(self) -> None:
        """Forget the last text (the firmware does on client disconnect)."""
        self._last = None


class RecentKeys:
    """A bounded memory of keys in arrival order; `seen` answers and records at once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def seen(self, key: Hashable) -> bool:
        """True if `key` is remembered; otherwise remember it (evicting the oldest) and return False."""
        if key in self._keys:
            return True
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return False

    def clear(self) -> None:
        """Forget everything."""
        self._keys.clear()


class PacketIdGenerator:
    """Packet ids shaped like the firmware's: a rolling 10-bit counter under 22 random bits.

    Like the firmware, which picks the counter's start at random at boot, a generator without a
    seed starts somewhere new each time: a client that remembers (sender, packet id) pairs across
    restarts (the bot's store does) must not take a rebooted node's packets for ones it has seen.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)  # None: seeded from the OS, like a boot
        self._counter = self._rng.randrange(ID_COUNTER_MASK + 1)

    def next(self) -> int:
        """A fresh non-zero packet id."""
        while True:
            self._counter = (self._counter + 1) & ID_COUNTER_MASK
            packet_id = self._counter | (self._rng.getrandbits(22) << 10)
            if packet_id:
                return packet_id


def routing_packet(
    *,
    sender: int,
    to: int,
    packet_id: int,
    request_id: int,
    error: str = OK,
    channel: int = 0,
    hop_limit: int = 0,
    hop_start: int = 0,
) -> mesh_pb2.MeshPacket:
    """An ACK (error NONE) or NAK for `request_id`, as RoutingModule::allocAckNak builds it."""
    packet = mesh_pb2.MeshPacket()
    setattr(packet, "from", sender)
    packet.to = to
    packet.id = packet_id
    packet.channel = channel
    packet.priority = mesh_pb2.MeshPacket.Priority.ACK
    packet.hop_limit = hop_limit
    packet.hop_start = hop_start
    packet.decoded.portnum = portnums_pb2.ROUTING_APP
    packet.decoded.request_id = request_id
    packet.decoded.payload = mesh_pb2.Routing(error_reason=error_code(error)).SerializeToString()
    return packet


def routing_error_of(packet: mesh_pb2.MeshPacket) -> str | None:
    """The error name of a ROUTING_APP packet (``NONE`` for an ACK), or None for other packets."""
    if packet.decoded.portnum != portnums_pb2.ROUTING_APP:
        return None
    routing = mesh_pb2.Routing()
    try:
        routing.ParseFromString(packet.decoded.payload)
    except Exception:  # protobuf raises its own DecodeError; a garbled payload is not an answer
        return None
    try:
        return mesh_pb2.Routing.Error.Name(routing.error_reason)
    except ValueError:
        return str(routing.error_reason)


def queue_status(*, res: int, packet_id: int, free: int, maxlen: int = limits.TX_QUEUE_SLOTS) -> mesh_pb2.FromRadio:
    """MeshService::sendQueueStatusToPhone: the answer to every ToRadio packet and heartbeat."""
    message = mesh_pb2.FromRadio()
    message.queueStatus.res = res
    message.queueStatus.free = free
    message.queueStatus.maxlen = maxlen
    message.queueStatus.mesh_packet_id = packet_id
    return message


def from_radio(packet: mesh_pb2.MeshPacket) -> mesh_pb2.FromRadio:
    """Wrap a packet for the client."""
    message = mesh_pb2.FromRadio()
    message.packet.CopyFrom(packet)
    return message


def on_air_copy(packet: mesh_pb2.MeshPacket, *, node_num: int, hop_limit: int, pki: bool) -> mesh_pb2.MeshPacket:
    """What Router::send puts on air for a client packet: our `from`, hop_start, no want_ack on broadcasts."""
    out = mesh_pb2.MeshPacket()
    out.CopyFrom(packet)
    setattr(out, "from", node_num)
    if out.want_ack and out.hop_limit == 0:
        out.hop_limit = hop_limit  # ReliableRouter::send: acks need at least one hop
    out.hop_start = out.hop_limit
    out.relay_node = node_num & 0xFF
    if is_broadcast(out.to):
        out.want_ack = False
    if pki:
        out.pki_encrypted = True
        out.channel = 0
    if not out.decoded.HasField("bitfield"):
        out.decoded.bitfield = 0
    return out


def client_text_packet(
    *,
    packet_id: int,
    to: int,
    text: str,
    channel: int = 0,
    want_ack: bool = False,
    hop_limit: int = limits.DEFAULT_HOP_LIMIT,
    reply_id: int | None = None,
) -> mesh_pb2.MeshPacket:
    """A text packet as the Python library's sendText hands it to the node."""
    packet = mesh_pb2.MeshPacket(id=packet_id, to=to, channel=channel, want_ack=want_ack, hop_limit=hop_limit)
    packet.decoded.portnum = portnums_pb2.TEXT_MESSAGE_APP
    packet.decoded.payload = text.encode("utf-8")
    if reply_id is not None:
        packet.decoded.reply_id = reply_id
    return packet


def node_info_packet(*, sender: int, packet_id: int, user: mesh_pb2.User, hop_limit: int) -> mesh_pb2.MeshPacket:
    """NodeInfoModule's broadcast of our User, as it goes on air."""
    packet = mesh_pb2.MeshPacket(to=limits.BROADCAST_NUM, id=packet_id, hop_limit=hop_limit, hop_start=hop_limit)
    setattr(packet, "from", sender)
    packet.relay_node = sender & 0xFF
    packet.priority = mesh_pb2.MeshPacket.Priority.BACKGROUND
    packet.decoded.portnum = portnums_pb2.NODEINFO_APP
    packet.decoded.payload = user.SerializeToString()
    packet.decoded.bitfield = 0
    return packet


def traceroute_hop(packet: mesh_pb2.MeshPacket, node_num: int | None, snr: float) -> None:
    """TraceRouteModule: a relay adds itself and the SNR it heard at, to the route or the route back;
    the end of the way (`node_num` None) adds its SNR only."""
    if packet.decoded.portnum != portnums_pb2.TRACEROUTE_APP:
        return
    route = mesh_pb2.RouteDiscovery()
    try:
        route.ParseFromString(packet.decoded.payload)
    except Exception:  # protobuf DecodeError: relay it untouched, as the firmware would
        return
    back = bool(packet.decoded.request_id)  # the answer, on its way back
    if node_num is not None:
        (route.route_back if back else route.route).append(node_num)
    (route.snr_back if back else route.snr_towards).append(int(round(snr * 4)))
    packet.decoded.payload = route.SerializeToString()
