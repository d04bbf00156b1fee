"""A virtual node's radio side: what it hears on air (or from a gateway), and what it puts on air.

A mixin of `VirtualNode`. Receiving follows the firmware's Router and ReliableRouter: duplicates dropped,
NodeDB updated, ACKs and NodeInfo replies sent, the packet handed to the client; transmitting respects
`lora.tx_enabled`, and retransmission waits follow the channel's air time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot.core import airtime, limits
from meshbot.core.domain import Clock
from meshbot.sim.air.air import Air
from meshbot.sim.node.modules import learnt_facts
from meshbot.sim.node.phone import ClientSide
from meshbot.sim.node.records import ReceivedLog, heard_of
from meshbot.sim.rules import firmware as fw
from meshbot.sim.rules import nodedb
from meshbot.sim.rules.channel import response_hop_limit, retransmission_delay_s
from meshbot.sim.rules.handshake import Identity, RadioSettings
from meshbot.sim.rules.reliable import ReliableSends

# The node's own logger, as before the split: one name for everything a virtual node logs about the air.
logger = logging.getLogger("meshbot.sim.node.node")


class AirSide:
    """The air-facing half of a node. Expects the attributes `VirtualNode` sets up."""

    air: Air
    node_num: int
    ignore_mqtt: bool
    ok_to_mqtt: bool
    reject_legacy_dms: bool
    on_heard: Callable[[mesh_pb2.MeshPacket], None] | None
    _own: Identity
    _radio: RadioSettings
    _modem: airtime.ModemPreset
    _known: dict[int, Identity]
    _clock: Clock
    _wall: Callable[[], float]
    _ids: fw.PacketIdGenerator
    _lock: threading.RLock
    _received: ReceivedLog
    _client: ClientSide
    _reliable: ReliableSends
    _history: fw.RecentKeys
    _retransmit_s: float | None
    # Provided by ModulesApi (annotation only: a method here would hide it, as VirtualNode lists this class first).
    answer_request: Callable[[mesh_pb2.MeshPacket], mesh_pb2.MeshPacket | None]

    def receive_from_air(self, packet: mesh_pb2.MeshPacket) -> None:
        """Called by the air with a packet this node heard."""
        sender = getattr(packet, "from")
        ack: mesh_pb2.MeshPacket | None = None
        with self._lock:
            if sender == self.node_num:
                self._reliable.resolve(packet.id, fw.OK, implicit=True)  # a neighbour relayed our packet
                return
            if self._history.seen((sender, packet.id)):
                return  # flooded duplicate
            if packet.via_mqtt and self.ignore_mqtt:
                return  # Router::perhapsHandleReceived: ignore_mqtt drops what came through a broker
            if self.reject_legacy_dms and fw.is_legacy_dm(packet, self.node_num):
                logger.info("node %08x: Rejecting legacy DM %08x from %08x", self.node_num, packet.id, sender)
                return  # a decode failure: no ACK, nothing to the client
            nodedb.learn(
                self._known, packet, int(self._wall()), self.node_num, learnt_facts(packet)
            )  # NodeDB::updateFrom
            answer = fw.routing_error_of(packet)
            if answer is not None and self._reliable.destination(packet.decoded.request_id) == sender:
                self._reliable.resolve(packet.decoded.request_id, answer, implicit=False)
            if packet.to in (self.node_num, limits.BROADCAST_NUM):
                heard = mesh_pb2.MeshPacket()
                heard.CopyFrom(packet)
                if not heard.rx_time:
                    heard.rx_time = int(self._wall())
                if packet.to == self.node_num and heard.decoded.request_id:
                    fw.traceroute_hop(heard, None, heard.rx_snr)  # the answer home: our SNR ends the way back
                if heard.pki_encrypted and sender in self._known:
                    heard.public_key = self._known[sender].public_key  # perhapsDecode: the key it opened with
                self._to_client(heard, airtime_s=self._airtime_of(heard))
            if packet.to == self.node_num and packet.want_ack and answer is None:
                ack = self._ack_for(packet)
            reply = self._nodeinfo_reply(packet)
            answer_to = self.answer_request(packet) if packet.to == self.node_num and answer is None else None
        if ack is not None:
            self._transmit(ack)
        if reply is not None:
            self._transmit(reply)
        if answer_to is not None:
            self._transmit(answer_to)
        if self.on_heard is not None and not packet.via_mqtt:
            self.on_heard(packet)

    def _transmit(self, packet: mesh_pb2.MeshPacket) -> str | None:
        """Put a frame on air, unless lora.tx_enabled is off (RadioLibInterface::send drops it, the queue moves on)."""
        if not self._radio.tx_enabled:
            logger.debug("node %08x: tx disabled, %08x not sent", self.node_num, packet.id)
            return None
        return self.air.transmit(self, packet)

    def _nodeinfo_reply(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket | None:
        """NodeInfoModule::allocReply: a NodeInfo request to us is answered with our User, to the asker."""
        decoded = packet.decoded
        if packet.to != self.node_num or decoded.portnum != portnums_pb2.NODEINFO_APP or not decoded.want_response:
            return None
        reply = fw.node_info_packet(
            sender=self.node_num, packet_id=self._ids.next(), user=self._own.user(), hop_limit=self._radio.hop_limit
        )
        reply.to = getattr(packet, "from")
        if self.ok_to_mqtt:
            reply.decoded.bitfield |= 1
        return reply

    def receive_from_mqtt(self, packet: mesh_pb2.MeshPacket) -> None:
        """A packet a gateway downlinked (MQTT::onReceiveProto): handled as received, then flooded on air."""
        self.receive_from_air(packet)
        if packet.to != self.node_num and packet.hop_limit > 0:
            relay = mesh_pb2.MeshPacket()
            relay.CopyFrom(packet)
            relay.hop_limit = packet.hop_limit - 1
            relay.relay_node = self.node_num & 0xFF
            self._transmit(relay)

    def acknowledge(self, packet: mesh_pb2.MeshPacket) -> None:
        """ACK a want_ack packet to us again: its sender retried it, so our first ACK was lost."""
        with self._lock:
            ack = self._ack_for(packet)
        self._transmit(ack)

    def on_queue_freed(self, free: int) -> None:
        """The air's TX queue has room again: tell the client, which stops sending at free == 0."""
        self._client.emit([fw.queue_status(res=0, packet_id=0, free=free)])

    def _ack_for(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket:
        """ReliableRouter::sniffReceived: an ACK with just enough hops to get back (RoutingModule)."""
        hops = response_hop_limit(packet.hop_start, packet.hop_limit, self._radio.hop_limit)
        ack = fw.routing_packet(
            sender=self.node_num,
            to=getattr(packet, "from"),
            packet_id=self._ids.next(),
            request_id=packet.id,
            channel=packet.channel,
            hop_limit=hops,
            hop_start=hops,
        )
        if self.ok_to_mqtt:
            ack.decoded.bitfield |= 1
        return ack

    def _airtime_of(self, packet: mesh_pb2.MeshPacket) -> float:
        frame = fw.frame_len_on_air(packet, packet.pki_encrypted)
        return airtime.time_on_air_s(frame, self._modem)

    def _to_client(self, packet: mesh_pb2.MeshPacket, *, airtime_s: float = 0.0) -> None:
        """Hand a packet to the client (now or once one connects) and record it."""
        self._received.add(heard_of(packet, at=self._clock.now(), airtime_s=airtime_s))
        self._client.emit([fw.from_radio(packet)])

    # ----- timing ------------------------------------------------------------------------------

    def _retransmit_interval(self, packet: mesh_pb2.MeshPacket) -> float:
        if self._retransmit_s is not None:
            return self._retransmit_s
        return retransmission_delay_s(self._airtime_of(packet), self._modem, self.air.utilisation_percent(self))

    def _queue_free(self) -> int:
        return self.air.queue_free(self)
