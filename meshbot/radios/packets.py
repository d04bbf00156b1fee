"""Meshtastic packet dicts (as the library publishes them) to immutable domain values: pure, no I/O.

The library hands listeners plain dicts; nothing in them is guaranteed, so every field is checked here.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from meshbot.core.domain import AckStatus, Inbound, SendResult


class MalformedPacket(ValueError):
    """A packet dict missing what every packet must have."""


# mesh.proto: node numbers and packet ids are fixed32; a packet names one of 8 channel slots.
_UINT32_MAX = 0xFFFFFFFF
_MAX_CHANNEL_INDEX = 7


def _int(value: Any, name: str, top: int = _UINT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedPacket(f"{name} is {type(value).__name__}, not an int")
    if not 0 <= value <= top:
        raise MalformedPacket(f"{name} {value} is out of range 0..{top}")
    return int(value)


def _text(value: Any) -> str | None:
    # The library decodes UTF-8 bytes, so a real packet never carries a lone surrogate;
    # a str that cannot be encoded back is treated like undecodable text.
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def parse_packet(packet: Mapping[str, Any], my_node_num: int) -> Inbound:
    """Turn the library's packet dict into an `Inbound`; raise MalformedPacket when it cannot."""
    if "from" not in packet or "id" not in packet:
        raise MalformedPacket("no 'from' or 'id'")
    sender, packet_id = _int(packet["from"], "from"), _int(packet["id"], "id")
    to = _int(packet.get("to", 0), "to")
    decoded = packet.get("decoded")
    if not isinstance(decoded, Mapping):
        decoded = {}
    payload = decoded.get("payload", b"")
    text = decoded.get("text")
    reply_id = decoded.get("replyId")
    return Inbound(
        sender=sender,
        to=to,
        packet_id=packet_id,
        portnum=str(decoded.get("portnum", "UNKNOWN_APP")),
        # The library leaves `text` unset when the payload is not valid UTF-8.
        text=_text(text),
        payload_len=len(payload) if isinstance(payload, (bytes, bytearray, str)) else 0,
        channel=_int(packet.get("channel", 0), "channel", _MAX_CHANNEL_INDEX),
        is_dm=to == my_node_num,
        emoji=bool(decoded.get("emoji")),
        reply_id=reply_id if isinstance(reply_id, int) and 0 <= reply_id <= _UINT32_MAX else None,
        hop_start=_opt_int(packet.get("hopStart")),
        hop_limit=_opt_int(packet.get("hopLimit")),
        snr=_opt_float(packet.get("rxSnr")),
        rssi=_opt_int(packet.get("rxRssi")),
        rx_time=_opt_float(packet.get("rxTime")),
        via_mqtt=bool(packet.get("viaMqtt")),
        pki=bool(packet.get("pkiEncrypted")),
        sender_key=_key(packet.get("publicKey")) if packet.get("pkiEncrypted") else None,
    )


def _key(value: Any) -> bytes | None:
    # The library turns the packet's bytes fields into base64 text (protobuf's MessageToDict).
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) or None
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True) or None
        except ValueError:
            return None
    return None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def result_of(packet: Mapping[str, Any], request_id: int, my_node_num: int) -> SendResult:
    """Read an ACK/NAK routing packet for `request_id`."""
    decoded = packet.get("decoded") or {}
    routing = decoded.get("routing") or {}
    reason = str(routing.get("errorReason", "NONE"))
    if reason != "NONE":
        return SendResult(request_id, AckStatus.NAKED, reason)
    # An ACK from our own node only says a rebroadcast was overheard.
    implicit = packet.get("from") == my_node_num
    return SendResult(request_id, AckStatus.IMPLICIT if implicit else AckStatus.ACKED)
