"""Build MeshPackets as a node hands them to its client after hearing them on air. Pure."""

from __future__ import annotations

from meshtastic.protobuf import mesh_pb2, portnums_pb2


def build_text_packet(
    *,
    sender: int,
    to: int,
    text: str | bytes,
    packet_id: int,
    channel: int = 0,
    hop_start: int = 3,
    hop_limit: int = 3,
    want_ack: bool = False,
    emoji: int = 0,
    portnum: str = "TEXT_MESSAGE_APP",
    reply_id: int | None = None,
    snr: float = 6.0,
    rssi: int = -80,
    via_mqtt: bool = False,
    rx_time: int = 0,
    public_key: bytes | None = None,
) -> mesh_pb2.MeshPacket:
    """A received text packet; `text` bytes go out raw, `public_key` marks it PKI-decrypted."""
    packet = mesh_pb2.MeshPacket()
    setattr(packet, "from", sender)
    packet.to = to
    packet.id = packet_id
    packet.channel = channel
    packet.hop_start = hop_start
    packet.hop_limit = hop_limit
    packet.want_ack = want_ack
    packet.rx_snr = snr
    packet.rx_rssi = rssi
    packet.via_mqtt = via_mqtt
    packet.rx_time = rx_time
    # The relayer is the sender itself for a direct packet; otherwise some other node's last byte.
    packet.relay_node = (sender if hop_start == hop_limit else sender ^ 0x5A) & 0xFF
    packet.transport_mechanism = (
        mesh_pb2.MeshPacket.TransportMechanism.TRANSPORT_MQTT
        if via_mqtt
        else mesh_pb2.MeshPacket.TransportMechanism.TRANSPORT_LORA
    )
    if public_key:
        packet.pki_encrypted = True
        packet.public_key = public_key
    decoded = packet.decoded
    decoded.portnum = portnums_pb2.PortNum.Value(portnum)
    decoded.payload = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if emoji:
        decoded.emoji = emoji
    if reply_id is not None:
        decoded.reply_id = reply_id
    return packet
