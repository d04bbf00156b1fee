"""From a published envelope to what the daemon hears: dedupe, decrypt, learn keys, ACK, hand on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from meshbot.core.directory import NodeReport
from meshbot.core.domain import Clock, Inbound
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id
from meshbot.radios.mqtt import codec
from meshbot.radios.mqtt.codec import BROADCAST, Dropped
from meshbot.radios.mqtt.state import BoundedTTL
from meshbot.radios.nodefacts import report_of
from meshbot.radios.protobufs import mesh_pb2, portnums_pb2

if TYPE_CHECKING:
    from meshbot.radios.mqtt.transport import MqttRadio

log = logging.getLogger(__name__)

SEEN_MAX, SEEN_TTL_S = 50_000, 900.0  # several gateways uplink one packet within seconds; QoS 1 may redeliver
HELD_MAX = 256  # PKI DMs waiting for their sender's NodeInfo
ASKED_TTL_S = 60.0  # ask one node for its NodeInfo at most this often


class InboundHandler:
    """Turns envelopes into `Inbound` for the daemon; everything it cannot use gets one log line."""

    def __init__(self, radio: MqttRadio, clock: Clock, key_wait_s: float, accept_legacy_dms: bool = False) -> None:
        self._radio = radio
        self._accept_legacy = accept_legacy_dms
        self.on_packet: Callable[[Inbound], None] | None = None
        self.on_report: Callable[[NodeReport], None] | None = None  # the node directory, when there is one
        self._seen: BoundedTTL[tuple[int, int], bool] = BoundedTTL(SEEN_MAX, SEEN_TTL_S, clock.now)
        self._held: BoundedTTL[tuple[int, int], mesh_pb2.MeshPacket] = BoundedTTL(
            HELD_MAX, max(key_wait_s, 1.0), clock.now, on_drop=_never_opened
        )
        self._asked: BoundedTTL[int, bool] = BoundedTTL(4096, ASKED_TTL_S, clock.now)

    def handle(self, payload: bytes, topic: str) -> None:
        """One message from the broker."""
        try:
            self._handle(payload, topic)
        except Dropped as drop:
            log.info(
                "ignored packet on %s: %s", topic, drop.detail, extra={"event": Event.IGNORED, "reason": drop.reason}
            )

    def _handle(self, payload: bytes, topic: str) -> None:
        me = self._radio.identity.node_num
        packet, channel_id, gateway = codec.parse_envelope(payload)
        sender = codec.sender_of(packet)
        pki = codec.is_pki(packet, channel_id)
        if sender == me or (pki and packet.to != me):
            return  # our own echo, or someone else's DM: the broker carries the whole region's
        if not self._seen.add_new((sender, packet.id), True):
            log.debug("duplicate %s/%d via %s", node_id(sender), packet.id, gateway)
            return
        if pki:
            self._open_pki(packet)
        else:
            self._dispatch(packet, codec.open_channel(packet, self._radio.channel), pki=False)

    def _open_pki(self, packet: mesh_pb2.MeshPacket) -> None:
        sender = codec.sender_of(packet)
        their_key = self._radio.keyring.get(sender)
        if their_key is None:
            # Hold it: their NodeInfo (which we ask for) may be on its way; expire_held() logs the drop.
            self._held.put((sender, packet.id), packet)
            self._ask_nodeinfo(sender)
            return
        data = codec.open_pki(packet, self._radio.identity.private_key, their_key)
        self._dispatch(packet, data, pki=True, sender_key=their_key)

    def _ask_nodeinfo(self, node: int) -> None:
        if self._asked.add_new(node, True):
            self._radio.send_nodeinfo(node, want_response=True)

    def _dispatch(
        self, packet: mesh_pb2.MeshPacket, data: mesh_pb2.Data, pki: bool, sender_key: bytes | None = None
    ) -> None:
        me, sender = self._radio.identity.node_num, codec.sender_of(packet)
        self._report(packet, data)
        if data.portnum == portnums_pb2.NODEINFO_APP:
            self._nodeinfo(sender, packet.to, data)
        elif data.portnum == portnums_pb2.ROUTING_APP:
            if packet.to == me and data.request_id:
                error = codec.routing_error(data)
                if error is not None:
                    self._radio.resolve(data.request_id, error, sender)
        elif data.portnum == portnums_pb2.TEXT_MESSAGE_APP:
            if packet.to not in (me, BROADCAST):
                return  # a channel-key DM between two other nodes
            # A channel-key DM is refused without an ACK, as the firmware does ("Rejecting legacy DM"): the
            # daemon logs it (once per node); a licensed operator's bot may accept them.
            legacy = packet.to == me and not pki
            if packet.to == me and packet.want_ack and (pki or self._accept_legacy):
                self._ack(packet)
            if self.on_packet is not None:
                self.on_packet(codec.to_inbound(packet, data, me, pki, sender_key))
            if legacy and not self._accept_legacy:
                log.debug("channel-key DM %d from %s: not ACKed", packet.id, node_id(sender))
        # Positions, telemetry and the rest of a region's traffic are no business of a text bot.

    def _report(self, packet: mesh_pb2.MeshPacket, data: mesh_pb2.Data) -> None:
        """Tell the node directory what this packet says about its sender (heard via a gateway, over MQTT)."""
        if self.on_report is None:
            return
        opened = mesh_pb2.MeshPacket()
        opened.CopyFrom(packet)
        opened.decoded.CopyFrom(data)  # the oneof drops the ciphertext
        try:
            self.on_report(report_of(opened, time.time(), via_mqtt=True))
        except Exception:  # the directory must never cost us a question
            log.exception("node report failed", extra={"event": Event.DIRECTORY_ERROR})

    def _nodeinfo(self, sender: int, to: int, data: mesh_pb2.Data) -> None:
        user = codec.parse_user(data)
        if user is None:
            raise Dropped(Reason.MALFORMED, f"NodeInfo from {node_id(sender)} does not parse")
        if bytes(user.public_key) == self._radio.identity.public_key:  # NodeDB: a node cannot have our key
            raise Dropped(Reason.KEY_MISMATCH, f"NodeInfo from {node_id(sender)} carries our own public key")
        if user.public_key and self._radio.keyring.learn(sender, bytes(user.public_key)):
            self._retry_held(sender)
        if data.want_response and to == self._radio.identity.node_num:
            self._radio.send_nodeinfo(sender, want_response=False)

    def _retry_held(self, sender: int) -> None:
        for key, packet in self._held.snapshot():
            if key[0] == sender and self._held.pop(key) is not None:
                try:
                    self._open_pki(packet)
                except Dropped as drop:
                    log.info(
                        "ignored held DM from %s: %s",
                        node_id(sender),
                        drop.detail,
                        extra={"event": Event.IGNORED, "reason": drop.reason},
                    )

    def _ack(self, packet: mesh_pb2.MeshPacket) -> None:
        # The handset waits for the destination's ACK; without one it retries and reports a failure. Routing
        # packets are never PKI-encrypted (firmware Router.cpp perhapsEncode): it goes on our channel's key.
        sender = codec.sender_of(packet)
        try:
            self._radio.publish_data(sender, codec.routing_data(packet.id), pki=False)
        except Exception as exc:  # an ACK lost is a retry by the handset, deduplicated here
            log.debug("ACK to %s not sent: %s", node_id(sender), exc)

    def expire_held(self) -> None:
        """Open held DMs whose sender's key has come (maybe learnt by another worker); drop those that never will."""
        for sender in {key[0] for key, _ in self._held.snapshot()}:
            if self._radio.keyring.get(sender) is not None:
                self._retry_held(sender)
        self._held.expire()


def _never_opened(key: tuple[int, int], _packet: mesh_pb2.MeshPacket) -> None:
    sender, packet_id = key
    log.info(
        "ignored PKI DM %d from %s: their public key is unknown (no NodeInfo heard)",
        packet_id,
        node_id(sender),
        extra={"event": Event.IGNORED, "reason": Reason.NO_PUBKEY, "node": node_id(sender)},
    )
