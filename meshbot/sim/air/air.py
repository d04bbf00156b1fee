"""The seam between a node and the radio channel, and the simplest air: one node, ideal neighbours.

A node hands every frame it puts on air to `Air.transmit`; the air later calls
`AirNode.receive_from_air` on whichever nodes hear it. A multi-node mesh implements `Air` with
air time, loss, flooding and duty cycle; `LoopbackAir` stands in for "the rest of the mesh"
around a single node: every destination answers its DMs, and a neighbour rebroadcasts broadcasts.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot.core import limits
from meshbot.sim.air.scheduler import Scheduler
from meshbot.sim.rules.firmware import PacketIdGenerator, is_broadcast, routing_packet

logger = logging.getLogger(__name__)


class AirNode(Protocol):
    """What the air sees of a node."""

    @property
    def node_num(self) -> int:
        """The node's number."""

    def receive_from_air(self, packet: mesh_pb2.MeshPacket) -> None:
        """A packet this node heard, with rx_snr/rx_rssi/hop_limit as received. Must not block long."""

    def acknowledge(self, packet: mesh_pb2.MeshPacket) -> None:
        """ACK again a want_ack packet to this node whose sender retried it."""

    def on_queue_freed(self, free: int) -> None:
        """The node's TX queue, full until now, has `free` slots again."""


class Air(Protocol):
    """The radio channel the nodes share."""

    def attach(self, node: AirNode) -> None:
        """Start hearing on behalf of `node`."""

    def detach(self, node: AirNode) -> None:
        """Stop delivering to `node`."""

    def transmit(self, sender: AirNode, packet: mesh_pb2.MeshPacket) -> str | None:
        """Put a decoded packet on air; None, or a Routing.Error name the sender must NAK with."""

    def queue_free(self, node: AirNode) -> int:
        """Free slots in the node's TX queue (the client stops sending at 0)."""

    def utilisation_percent(self, node: AirNode) -> float:
        """Channel utilisation the node measures (it widens contention and retry delays)."""


class LoopbackAir:
    """One node's air: every other node is in range, answers DMs, and rebroadcasts broadcasts.

    Answers come `ack_delay_s` real seconds later on the scheduler's thread. Node numbers in
    `unreachable` never answer (the sender's retries then end in MAX_RETRANSMIT); with
    `neighbours` False nobody rebroadcasts, so a broadcast with want_ack never gets its implicit ACK.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        ack_delay_s: float = 0.05,
        hop_limit: int = limits.DEFAULT_HOP_LIMIT,
        snr: float = 6.0,
        rssi: int = -80,
        seed: int = 0,
    ) -> None:
        self.ack_delay_s = ack_delay_s
        self.hop_limit = hop_limit
        self.snr = snr
        self.rssi = rssi
        self.unreachable: set[int] = set()
        self.neighbours = True
        self._scheduler = scheduler
        self._ids = PacketIdGenerator(seed)
        self._lock = threading.Lock()
        self._nodes: dict[int, AirNode] = {}
        self._transmissions: list[mesh_pb2.MeshPacket] = []

    def attach(self, node: AirNode) -> None:
        """Deliver answers to `node`."""
        with self._lock:
            self._nodes[node.node_num] = node

    def detach(self, node: AirNode) -> None:
        """Stop delivering to `node`."""
        with self._lock:
            self._nodes.pop(node.node_num, None)

    @property
    def transmissions(self) -> list[mesh_pb2.MeshPacket]:
        """Copies of every packet put on air, retransmissions included."""
        with self._lock:
            return list(self._transmissions)

    def queue_free(self, node: AirNode) -> int:
        """Frames leave at once here, so the TX queue is always empty."""
        return limits.TX_QUEUE_SLOTS

    def utilisation_percent(self, node: AirNode) -> float:
        """An ideal channel: never busy."""
        return 0.0

    def transmit(self, sender: AirNode, packet: mesh_pb2.MeshPacket) -> str | None:
        """Record the frame and schedule what the rest of the mesh would answer."""
        sent = mesh_pb2.MeshPacket()
        sent.CopyFrom(packet)
        with self._lock:
            self._transmissions.append(sent)
            answer = self._answer(sent)
        if answer is not None:
            self._scheduler.call_later(self.ack_delay_s, lambda: self._deliver(sender.node_num, answer))
        return None

    def _answer(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket | None:
        if is_broadcast(packet.to):
            return self._rebroadcast(packet) if self.neighbours and packet.hop_limit > 0 else None
        if packet.to in self.unreachable or not packet.want_ack:
            return None
        if packet.decoded.portnum == portnums_pb2.ROUTING_APP:
            return None  # nobody acks an ack
        ack = routing_packet(
            sender=packet.to,
            to=getattr(packet, "from"),
            packet_id=self._ids.next(),
            request_id=packet.id,
            hop_limit=self.hop_limit,
            hop_start=self.hop_limit,
        )
        return self._heard(ack, relay=packet.to)

    def _rebroadcast(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket:
        echo = mesh_pb2.MeshPacket()
        echo.CopyFrom(packet)
        echo.hop_limit = packet.hop_limit - 1
        # Any neighbour will do; its last byte differs from the sender's so it reads as a relay.
        return self._heard(echo, relay=(getattr(packet, "from") + 1) & 0xFF)

    def _heard(self, packet: mesh_pb2.MeshPacket, *, relay: int) -> mesh_pb2.MeshPacket:
        packet.rx_snr = self.snr
        packet.rx_rssi = self.rssi
        packet.relay_node = relay & 0xFF
        packet.transport_mechanism = mesh_pb2.MeshPacket.TransportMechanism.TRANSPORT_LORA
        return packet

    def _deliver(self, num: int, packet: mesh_pb2.MeshPacket) -> None:
        with self._lock:
            node = self._nodes.get(num)
        if node is None:
            logger.debug("air: node %08x gone, dropping answer", num)
            return
        node.receive_from_air(packet)
