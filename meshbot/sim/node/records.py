"""What a client sent through its node (with the outcome), and what its node handed it. Thread-safe logs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from meshtastic.protobuf import mesh_pb2

from meshbot.sim.rules import firmware as fw

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class HeardPacket:
    """One packet a node handed to its client: heard on air, or the node's own ACK/NAK note."""

    sender: int  # the packet's `from`
    to: int
    packet_id: int
    channel: int
    portnum: str
    payload: bytes
    text: str | None  # decoded UTF-8 when it is a text port and decodes
    hop_start: int
    hop_limit: int
    rx_snr: float
    rx_rssi: int
    at: float  # clock.now() when the node handed it to its client
    airtime_s: float  # air time of the frame it arrived in; 0 for the node's own notes
    request_id: int = 0  # for ACKs/NAKs and replies: the packet answered
    error: str | None = None  # ROUTING_APP only: the Routing.Error name, "NONE" for an ACK
    reply_id: int | None = None
    pki: bool = False
    public_key: bytes = b""  # a PKI DM: the sender's key it was opened with (MeshPacket.public_key)

    @property
    def hops(self) -> int:
        """Relays the packet went through (hop_start - hop_limit), as the apps show it."""
        return max(self.hop_start - self.hop_limit, 0)


def heard_of(packet: mesh_pb2.MeshPacket, *, at: float, airtime_s: float) -> HeardPacket:
    """The record of a decoded packet handed to the client."""
    decoded = packet.decoded
    return HeardPacket(
        sender=getattr(packet, "from"),
        to=packet.to,
        packet_id=packet.id,
        channel=packet.channel,
        portnum=fw.port_name(decoded.portnum),
        payload=bytes(decoded.payload),
        text=_text_of(decoded),
        hop_start=packet.hop_start,
        hop_limit=packet.hop_limit,
        rx_snr=packet.rx_snr,
        rx_rssi=packet.rx_rssi,
        at=at,
        airtime_s=airtime_s,
        request_id=decoded.request_id,
        error=fw.routing_error_of(packet),
        reply_id=decoded.reply_id or None,
        pki=packet.pki_encrypted,
        public_key=bytes(packet.public_key),
    )


class ReceivedLog:
    """Append-only list of `HeardPacket`, with waiting and listeners (called outside the lock)."""

    def __init__(self) -> None:
        self._items: list[HeardPacket] = []
        self._changed = threading.Condition()
        self._listeners: list[Callable[[HeardPacket], None]] = []

    def add(self, record: HeardPacket) -> None:
        """Append and tell the listeners."""
        with self._changed:
            self._items.append(record)
            listeners = list(self._listeners)
            self._changed.notify_all()
        for listener in listeners:
            try:
                listener(record)
            except Exception:  # a broken console must not break the node
                logger.exception("received-packet listener failed")

    def subscribe(self, listener: Callable[[HeardPacket], None]) -> None:
        """Call `listener` with every later record (on the delivering thread; keep it quick)."""
        with self._changed:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[HeardPacket], None]) -> None:
        """Stop calling `listener`."""
        with self._changed:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def snapshot(self) -> list[HeardPacket]:
        """A copy of every record, oldest first."""
        with self._changed:
            return list(self._items)

    def wait_for(self, predicate: Callable[[list[HeardPacket]], bool], timeout: float) -> list[HeardPacket]:
        """Wait (real time) until `predicate(records)` holds; return a snapshot either way."""
        with self._changed:
            self._changed.wait_for(lambda: predicate(self._items), timeout)
            return list(self._items)
