"""What a virtual node does with its client's packets: PhoneAPI, MeshService and Router checks.

A mixin of `VirtualNode`, kept apart so that each module stays readable. Order of checks, as in the
firmware: repeated id, encrypted-from-client, text rate limit (PhoneAPI), to ourselves, TOO_LARGE,
NO_CHANNEL (Router::send), then the air's own refusal (duty cycle: DUTY_CYCLE_LIMIT).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot.core import limits
from meshbot.core.domain import Clock
from meshbot.sim.air.air import Air
from meshbot.sim.node.phone import ClientSide, Session
from meshbot.sim.node.records import ACK, SentLog, SentPacket, record_of
from meshbot.sim.rules import firmware as fw
from meshbot.sim.rules.handshake import Identity, RadioSettings
from meshbot.sim.rules.reliable import Pending, ReliableSends

logger = logging.getLogger(__name__)


class PhoneApi:
    """The client-facing half of a node. Expects the attributes `VirtualNode` sets up."""

    air: Air
    _own: Identity
    _radio: RadioSettings
    _known: dict[int, Identity]
    _clock: Clock
    _wall: Callable[[], float]
    _ids: fw.PacketIdGenerator
    _lock: threading.RLock
    _log: SentLog
    _client: ClientSide
    _api_session: Session
    _reliable: ReliableSends

    @property
    def node_num(self) -> int:
        """This node's number."""
        return self._own.num

    def send_text(
        self,
        text: str,
        *,
        to: int = limits.BROADCAST_NUM,
        channel: int = 0,
        want_ack: bool | None = None,
        reply_id: int | None = None,
        hop_limit: int | None = None,
    ) -> int:
        """Send a text as this node's own client would (rate limit, NAKs and all); return its id.

        `want_ack` None: True for a DM, as the apps do. The outcome lands in `sent`; ACKs and NAKs in
        `received`, as the client would see them.
        """
        with self._lock:
            packet_id = self._ids.next()
        packet = fw.client_text_packet(
            packet_id=packet_id,
            to=to,
            text=text,
            channel=channel,
            want_ack=(not fw.is_broadcast(to)) if want_ack is None else want_ack,
            hop_limit=self._radio.hop_limit if hop_limit is None else hop_limit,
            reply_id=reply_id,
        )
        self._handle_client_packet(self._api_session, packet)
        return packet_id

    def _handle_client_packet(self, session: Session, packet: mesh_pb2.MeshPacket) -> None:
        with self._lock:
            admitted = self._admit(session, packet)
        if admitted is None:
            return
        index, on_air = admitted
        if getattr(self, "ok_to_mqtt", False):
            on_air.decoded.bitfield |= 1  # Router::send: BITFIELD_OK_TO_MQTT from lora.config_ok_to_mqtt
        error = self._transmit(on_air)
        if error is not None:
            with self._lock:
                self._fail(index, on_air, error)

    def _admit(self, session: Session, packet: mesh_pb2.MeshPacket) -> tuple[int, mesh_pb2.MeshPacket] | None:
        """PhoneAPI + Router checks; returns the record index and packet to put on air, or None."""
        if packet.id and session.recent.seen(packet.id):
            logger.debug("node %08x: ignoring repeated packet id %08x", self.node_num, packet.id)
            return None
        if not packet.HasField("decoded"):
            logger.warning("node %08x: client sent an encrypted packet; ignored", self.node_num)
            self._status(session, res=0, packet_id=packet.id)
            return None
        if not packet.id:
            packet.id = self._ids.next()
        dest = self._known.get(packet.to)
        pki = fw.uses_pki(packet, dest_has_key=bool(dest and dest.public_key))
        frame_len = fw.frame_len_on_air(packet, pki)
        record = record_of(packet, at=self._clock.now(), pki=pki, frame_len=frame_len)
        index = self._record(record)
        is_text = packet.decoded.portnum == portnums_pb2.TEXT_MESSAGE_APP
        if is_text and not session.rate.admit(record.at):
            return self._refuse(session, index, packet, "RATE_LIMIT_EXCEEDED", res=0)
        if packet.to == self.node_num:
            self._settle(index, ACK)  # to ourselves: handled locally, never on air
            self._status(session, res=0, packet_id=packet.id)
            self._answer_locally(packet)
            return None
        if fw.too_large(packet, pki):
            return self._refuse(session, index, packet, "TOO_LARGE", res=fw.error_code("TOO_LARGE"))
        if not pki and packet.channel >= len(self._radio.channel_names):
            return self._refuse(session, index, packet, "NO_CHANNEL", res=fw.error_code("NO_CHANNEL"))
        on_air = fw.on_air_copy(packet, node_num=self.node_num, hop_limit=self._radio.hop_limit, pki=pki)
        self._status(session, res=0, packet_id=packet.id)
        if packet.want_ack:
            self._reliable.track(index, on_air)
        else:
            self._settle(index, ACK)
        return index, on_air

    def _status(self, session: Session, *, res: int, packet_id: int) -> None:
        """MeshService answers every ToRadio packet with a queue status; API sends have no client to tell."""
        if session is not self._api_session:
            self._client.emit([fw.queue_status(res=res, packet_id=packet_id, free=self._queue_free())])

    def _refuse(self, session: Session, index: int, packet: mesh_pb2.MeshPacket, error: str, *, res: int) -> None:
        """Queue status with `res`, then a NAK from this node (Router::abortSendAndNak)."""
        self._settle(index, error)
        self._status(session, res=res, packet_id=packet.id)
        self._note(packet.id, error, channel=packet.channel if error != "TOO_LARGE" else 0)
        logger.info("node %08x: NAK %s for packet %08x", self.node_num, error, packet.id)
        return None

    def _fail(self, index: int, on_air: mesh_pb2.MeshPacket, error: str) -> None:
        """The air refused a packet the node had accepted (say DUTY_CYCLE_LIMIT): NAK it."""
        if self._reliable.destination(on_air.id) is not None:
            self._reliable.resolve(on_air.id, error, implicit=False)
            return
        self._settle(index, error)
        self._note(on_air.id, error, channel=on_air.channel)
        logger.info("node %08x: NAK %s for packet %08x", self.node_num, error, on_air.id)

    def _finish(self, pending: Pending, error: str, implicit: bool) -> None:
        """A want_ack packet ended; tell the client unless the destination's ACK is on its way to it."""
        for index in (*pending.earlier, pending.index):
            self._settle(index, ACK if error == fw.OK else error)
        if implicit or error != fw.OK:
            # Implicit ACKs and our own give-ups come from this node (ReliableRouter / abortSendAndNak).
            self._note(pending.packet.id, error, channel=pending.packet.channel)

    def _note(self, request_id: int, error: str, *, channel: int) -> None:
        """An ACK or NAK from this node to its own client."""
        note = fw.routing_packet(
            sender=self.node_num,
            to=self.node_num,
            packet_id=self._ids.next(),
            request_id=request_id,
            error=error,
            channel=channel,
        )
        note.rx_time = int(self._wall())
        self._to_client(note)

    def _record(self, record: SentPacket) -> int:
        logger.debug(
            "node %08x: client sent %08x %s to %08x", self.node_num, record.packet_id, record.portnum, record.to
        )
        return self._log.add(record)

    def _settle(self, index: int, outcome: str) -> None:
        self._log.settle(index, outcome)

    def _answer_locally(self, packet: mesh_pb2.MeshPacket) -> None:
        """A request from our client to its own node (admin, telemetry): the module's answer goes straight back."""
        reply = self.answer_admin(packet) or self.answer_request(packet)
        if reply is not None:
            reply.rx_time = int(self._wall())
            self._to_client(reply)

    # Provided by VirtualNode (and its ModulesApi).
    def answer_admin(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket | None:
        raise NotImplementedError

    def answer_request(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket | None:
        raise NotImplementedError

    def _transmit(self, packet: mesh_pb2.MeshPacket) -> str | None:
        raise NotImplementedError

    def _to_client(self, packet: mesh_pb2.MeshPacket, *, airtime_s: float = 0.0) -> None:
        raise NotImplementedError

    def _queue_free(self) -> int:
        raise NotImplementedError
