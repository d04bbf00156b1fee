"""What the client sent through a node, with the outcome the node reported. Thread-safe log."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from meshtastic.protobuf import mesh_pb2

from meshbot.sim import firmware as fw

PENDING = "PENDING"  # a want_ack packet still waiting for its ACK or NAK
ACK = "ACK"  # went on air (and, with want_ack, was acknowledged)


@dataclass(frozen=True)
class SentPacket:
    """One packet the connected client (the bot) sent through this node."""

    packet_id: int
    to: int
    channel: int
    portnum: str  # e.g. "TEXT_MESSAGE_APP"
    payload: bytes
    text: str | None  # decoded UTF-8 when it is a text port and decodes
    want_ack: bool
    hop_limit: int
    reply_id: int | None
    at: float  # clock.now() when the node received it from the client
    outcome: str  # "ACK", "PENDING", or the Routing.Error name it was NAKed with
    pki: bool = False  # would go PKI-encrypted (a DM to a node whose key we know)
    frame_len: int = 0  # bytes of the LoRa frame it makes (header, Data, PKI overhead)


def _text_of(decoded: mesh_pb2.Data) -> str | None:
    if decoded.portnum not in fw.TEXT_PORTS:
        return None
    try:
        return decoded.payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def record_of(packet: mesh_pb2.MeshPacket, *, at: float, pki: bool, frame_len: int) -> SentPacket:
    """A PENDING record of a decoded client packet."""
    return SentPacket(
        packet_id=packet.id,
        to=packet.to,
        channel=packet.channel,
        portnum=fw.port_name(packet.decoded.portnum),
        payload=bytes(packet.decoded.payload),
        text=_text_of(packet.decoded),
        want_ack=packet.want_ack,
        hop_limit=packet.hop_limit,
        reply_id=packet.decoded.reply_id or None,
        at=at,
        outcome=PENDING,
        pki=pki,
        frame_len=frame_len,
    )


class SentLog:
    """Append-only list of `SentPacket` whose outcomes are filled in as answers come."""

    def __init__(self) -> None:
        self._items: list[SentPacket] = []
        self._changed = threading.Condition()

    def add(self, record: SentPacket) -> int:
        """Append and return the record's index."""
        with self._changed:
            self._items.append(record)
            self._changed.notify_all()
            return len(self._items) - 1

    def settle(self, index: int, outcome: str) -> None:
        """Set the outcome of record `index`."""
        with self._changed:
            self._items[index] = replace(self._items[index], outcome=outcome)
            self._changed.notify_all()

    def snapshot(self) -> list[SentPacket]:
        """A copy of every record, oldest first."""
        with self._changed:
            return list(self._items)

    def wait_for(self, count: int, timeout: float) -> list[SentPacket]:
        """Wait until `count` records exist and none of the first `count` is PENDING; return a snapshot."""

        def settled() -> bool:
            return len(self._items) >= count and all(p.outcome != PENDING for p in self._items[:count])

        with self._changed:
            self._changed.wait_for(settled, timeout)
            return list(self._items)
