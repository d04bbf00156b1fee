"""ServiceEnvelope <-> MeshPacket <-> `Inbound`, the way gateways and the firmware lay them out (src/mqtt/MQTT.cpp).

Topics: `<root>/2/e/<channel name>/<!gateway>`; PKI DMs use the channel name `PKI`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from meshbot.core.domain import Inbound
from meshbot.core.events import Reason
from meshbot.core.ids import node_id
from meshbot.radios.mqtt import crypto
from meshbot.radios.protobufs import config_pb2, mesh_pb2, mqtt_pb2, portnums_pb2

BROADCAST = 0xFFFFFFFF
PKI_CHANNEL = "PKI"
OK_TO_MQTT_BIT = 1  # Data.bitfield bit 0 (BITFIELD_OK_TO_MQTT_SHIFT = 0)
_KNOWN_PORTS = frozenset(portnums_pb2.PortNum.values())


class Dropped(Exception):
    """A packet the transport cannot or will not hand on, with the reason for its one log line."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Channel:
    """The one channel the bot sits on: its name, expanded AES key and hash byte."""

    name: str
    key: bytes

    @property
    def hash(self) -> int:
        """The packet `channel` byte of this channel."""
        return crypto.channel_hash(self.name, self.key)

    @classmethod
    def from_psk(cls, name: str, psk: bytes) -> Channel:
        """The channel `name` with the PSK as configured (1 byte: a default-key index)."""
        return cls(name, crypto.expand_psk(psk))


def topic(root: str, channel_name: str, gateway: int) -> str:
    """Where a node publishes: `<root>/2/e/<channel>/<!gateway>`."""
    return f"{root}/2/e/{channel_name}/{node_id(gateway)}"


def subscriptions(root: str, channel_name: str) -> list[str]:
    """What a gateway with downlink on this channel listens to: the channel and every PKI DM."""
    return [f"{root}/2/e/{channel_name}/+", f"{root}/2/e/{PKI_CHANNEL}/+"]


def sender_of(packet: mesh_pb2.MeshPacket) -> int:
    """The packet's `from` (a Python keyword, hence getattr)."""
    return int(getattr(packet, "from"))


def parse_envelope(payload: bytes) -> tuple[mesh_pb2.MeshPacket, str, str]:
    """The packet, channel id and gateway id of a published envelope; Dropped(GARBAGE) otherwise."""
    env = mqtt_pb2.ServiceEnvelope()
    try:
        env.ParseFromString(payload)
    except (DecodeError, ValueError) as exc:
        raise Dropped(Reason.GARBAGE, f"not a ServiceEnvelope ({len(payload)} B): {exc}") from None
    if not env.HasField("packet") or sender_of(env.packet) == 0 or env.packet.id == 0:
        raise Dropped(Reason.GARBAGE, f"envelope without a packet, sender or id ({len(payload)} B)")
    return env.packet, env.channel_id, env.gateway_id


def _parse_data(plain: bytes, what: str) -> mesh_pb2.Data:
    data = mesh_pb2.Data()
    try:
        data.ParseFromString(plain)
    except (DecodeError, ValueError):
        raise Dropped(Reason.UNDECRYPTABLE, f"{what} does not decrypt to a Data message") from None
    if data.portnum == portnums_pb2.UNKNOWN_APP:  # what a wrong key usually yields, as the firmware judges it
        raise Dropped(Reason.UNDECRYPTABLE, f"{what} decrypts to no port (wrong key?)")
    if data.portnum not in _KNOWN_PORTS:
        raise Dropped(Reason.UNKNOWN_PORT, f"{what} is for unknown port {data.portnum}")
    return data


def open_channel(packet: mesh_pb2.MeshPacket, channel: Channel) -> mesh_pb2.Data:
    """Decrypt a channel packet with our channel key."""
    if packet.HasField("decoded"):  # a gateway on an unencrypted channel sends it in the clear
        return _checked_port(packet.decoded)
    if packet.channel != channel.hash:
        raise Dropped(Reason.UNDECRYPTABLE, f"channel hash {packet.channel} is not ours ({channel.hash})")
    plain = crypto.channel_crypt(channel.key, packet.id, sender_of(packet), packet.encrypted)
    return _parse_data(plain, "channel packet")


def _checked_port(data: mesh_pb2.Data) -> mesh_pb2.Data:
    if data.portnum not in _KNOWN_PORTS:
        raise Dropped(Reason.UNKNOWN_PORT, f"clear packet for unknown port {data.portnum}")
    return data


def open_pki(packet: mesh_pb2.MeshPacket, private_key: bytes, their_key: bytes) -> mesh_pb2.Data:
    """Decrypt a PKI DM to us, sent by the owner of `their_key`."""
    try:
        shared = crypto.pki_key(private_key, their_key)
        plain = crypto.pki_decrypt(shared, packet.id, sender_of(packet), packet.encrypted)
    except crypto.CryptoError as exc:
        raise Dropped(Reason.UNDECRYPTABLE, f"PKI packet: {exc}") from None
    return _parse_data(plain, "PKI packet")


def is_pki(packet: mesh_pb2.MeshPacket, channel_id: str) -> bool:
    """A PKI DM: marked so, or on the PKI topic with channel 0 to one node (as the firmware tells them)."""
    if packet.HasField("decoded"):
        return False
    return packet.pki_encrypted or (channel_id == PKI_CHANNEL and packet.channel == 0 and packet.to != BROADCAST)


def to_inbound(
    packet: mesh_pb2.MeshPacket, data: mesh_pb2.Data, my_num: int, pki: bool, sender_key: bytes | None = None
) -> Inbound:
    """The `Inbound` the daemon reads, as the meshtastic-library transport would give it."""
    port = portnums_pb2.PortNum.Name(data.portnum)
    text: str | None = None
    if data.portnum == portnums_pb2.TEXT_MESSAGE_APP:
        try:
            text = data.payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return Inbound(
        sender=sender_of(packet),
        to=packet.to,
        packet_id=packet.id,
        portnum=port,
        text=text,
        payload_len=len(data.payload),
        channel=0,  # the one channel the bot sits on is its index 0
        is_dm=packet.to == my_num,
        emoji=bool(data.emoji),
        reply_id=data.reply_id or None,
        hop_start=packet.hop_start or None,
        hop_limit=packet.hop_limit if packet.hop_start else None,
        snr=packet.rx_snr or None,
        rssi=packet.rx_rssi or None,
        rx_time=float(packet.rx_time) if packet.rx_time else None,
        via_mqtt=packet.via_mqtt,
        pki=pki,
        sender_key=sender_key if pki else None,
    )


@dataclass(frozen=True)
class Header:
    """The routing header of a packet the bot originates."""

    sender: int
    dest: int
    packet_id: int
    hop_limit: int
    want_ack: bool = False


def _packet(head: Header) -> mesh_pb2.MeshPacket:
    packet = mesh_pb2.MeshPacket()
    setattr(packet, "from", head.sender)
    packet.to = head.dest
    packet.id = head.packet_id
    packet.hop_limit = head.hop_limit
    packet.hop_start = head.hop_limit
    packet.want_ack = head.want_ack
    packet.priority = mesh_pb2.MeshPacket.Priority.RELIABLE if head.want_ack else mesh_pb2.MeshPacket.Priority.DEFAULT
    return packet


def seal_channel(head: Header, data: mesh_pb2.Data, channel: Channel) -> mesh_pb2.MeshPacket:
    """A channel packet encrypted with the channel key."""
    packet = _packet(head)
    packet.channel = channel.hash
    packet.encrypted = crypto.channel_crypt(channel.key, head.packet_id, head.sender, data.SerializeToString())
    return packet


def seal_pki(head: Header, data: mesh_pb2.Data, private_key: bytes, their_key: bytes) -> mesh_pb2.MeshPacket:
    """A DM encrypted to `their_key` (channel 0, pki_encrypted)."""
    packet = _packet(head)
    shared = crypto.pki_key(private_key, their_key)
    packet.encrypted = crypto.pki_encrypt(shared, head.packet_id, head.sender, data.SerializeToString())
    packet.channel = 0
    packet.pki_encrypted = True
    return packet


def envelope(packet: mesh_pb2.MeshPacket, channel_id: str, gateway: int) -> bytes:
    """The bytes a node publishes: ServiceEnvelope(packet, channel_id, gateway_id)."""
    env = mqtt_pb2.ServiceEnvelope(channel_id=channel_id, gateway_id=node_id(gateway))
    env.packet.CopyFrom(packet)
    return bytes(env.SerializeToString())


def text_data(text: str, reply_id: int | None, ok_to_mqtt: bool) -> mesh_pb2.Data:
    """A TEXT_MESSAGE_APP payload."""
    data = mesh_pb2.Data(portnum=portnums_pb2.TEXT_MESSAGE_APP, payload=text.encode("utf-8"))
    if reply_id:
        data.reply_id = reply_id
    data.bitfield = OK_TO_MQTT_BIT if ok_to_mqtt else 0
    return data


def nodeinfo_data(user: mesh_pb2.User, want_response: bool, ok_to_mqtt: bool) -> mesh_pb2.Data:
    """A NODEINFO_APP payload carrying our `User` (with its public key)."""
    data = mesh_pb2.Data(portnum=portnums_pb2.NODEINFO_APP, payload=user.SerializeToString())
    data.want_response = want_response
    data.bitfield = OK_TO_MQTT_BIT if ok_to_mqtt else 0
    return data


def routing_data(request_id: int, error: int = 0) -> mesh_pb2.Data:
    """A ROUTING_APP ACK (error 0) or NAK for `request_id`."""
    routing = mesh_pb2.Routing(error_reason=error)
    return mesh_pb2.Data(portnum=portnums_pb2.ROUTING_APP, payload=routing.SerializeToString(), request_id=request_id)


def parse_user(data: mesh_pb2.Data) -> mesh_pb2.User | None:
    """The `User` of a NodeInfo payload, or None when it does not parse."""
    user = mesh_pb2.User()
    try:
        user.ParseFromString(data.payload)
    except (DecodeError, ValueError):
        return None
    return user


def routing_error(data: mesh_pb2.Data) -> str | None:
    """The Routing.Error name of an ACK/NAK payload ("NONE" for an ACK), or None when it is no routing reply."""
    routing = mesh_pb2.Routing()
    try:
        routing.ParseFromString(data.payload)
    except (DecodeError, ValueError):
        return None
    if routing.WhichOneof("variant") != "error_reason" and routing.error_reason == 0 and data.request_id == 0:
        return None
    try:
        return str(mesh_pb2.Routing.Error.Name(routing.error_reason))
    except ValueError:
        return f"ERROR_{routing.error_reason}"


KeyLookup = Callable[[int], bytes | None]


# The firmware names a default channel after its modem preset (LONG_FAST -> "LongFast").
DEFAULT_CHANNEL_NAMES = frozenset(
    "".join(word.capitalize() for word in name.split("_"))
    for name in config_pb2.Config.LoRaConfig.ModemPreset.keys()  # noqa: SIM118 (a protobuf enum, not a dict)
)
# PSKs everyone has: none, or "AQ==" (the firmware's default key).
DEFAULT_PSKS = frozenset({b"", b"\x01"})


def is_default_public(name: str, psk: bytes) -> bool:
    """True for the mesh's default public channel: a preset's name (LongFast, MediumFast...) and the default key."""
    return psk in DEFAULT_PSKS and name in DEFAULT_CHANNEL_NAMES


def channel_kind(name: str, psk: bytes) -> str:
    """One phrase for the start-up log: whether `name` is the mesh's default public channel, and why."""
    if is_default_public(name, psk):
        return f"channel {name} with the default key: the mesh's default public channel"
    why = "its own key" if psk not in DEFAULT_PSKS else "its own name"
    return f"channel {name} ({why}): a private channel, not the mesh's default public one"
