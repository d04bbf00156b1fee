"""What `MqttRadio` sends: packets sealed (channel or PKI) and published, ACKs matched to them, copies resent.

`MqttSending` is a mixin of `MqttRadio`; the client, its callbacks and the housekeeping thread stay in
`transport`. A DM goes PKI-encrypted, waiting briefly for the asker's key; NodeInfo tells others ours.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import paho.mqtt.client as paho

from meshbot.core import limits
from meshbot.core.config import MqttConfig
from meshbot.core.domain import AckStatus, Outbound, RadioUnavailable, SendResult
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id
from meshbot.radios.mqtt import codec
from meshbot.radios.mqtt.codec import BROADCAST, PKI_CHANNEL, Channel, Header
from meshbot.radios.mqtt.identity import Identity, Keyring, KeyWait
from meshbot.radios.mqtt.state import BoundedTTL, Retransmits
from meshbot.radios.protobufs import mesh_pb2

if TYPE_CHECKING:
    from meshbot.radios.mqtt.transport import ClusterLink

# One logger for the whole transport: operators filter its lines by this name.
log = logging.getLogger("meshbot.radios.mqtt.transport")


class MqttSending:
    """The sending half of `MqttRadio`. Expects the attributes it sets up."""

    _cfg: MqttConfig
    _cluster: ClusterLink | None
    _hop_limit: int
    _dm_on_channel: bool
    _long_name: str
    _up: threading.Event
    _client: paho.Client
    _pending: BoundedTTL[int, Callable[[SendResult], None]]
    _retransmits: Retransmits
    _key_wait: KeyWait
    channel: Channel
    identity: Identity
    keyring: Keyring

    def resolve(self, request_id: int, error: str, sender: int) -> None:
        """An ACK or NAK arrived for one of our sends."""
        on_result = self._pending.pop(request_id)
        self._retransmits.forget(request_id)
        if on_result is None:
            if self._cluster is not None:  # the broker gave a sibling's ACK to us: pass it on
                self._cluster.forward_ack(request_id, error, sender)
            return
        if error == "NONE":
            on_result(SendResult(request_id, AckStatus.ACKED))
        else:
            on_result(SendResult(request_id, AckStatus.NAKED, error))
            if error == "PKI_UNKNOWN_PUBKEY":  # they lack our key: tell them again
                self.send_nodeinfo(sender, want_response=False)

    def _resolve_forwarded(self, request_id: int, error: str, sender: int) -> None:
        """An ACK another worker heard: ours only if we are waiting for it (never forwarded again)."""
        if request_id in dict(self._pending.snapshot()):
            self.resolve(request_id, error, sender)

    def publish_data(
        self, dest: int, data: mesh_pb2.Data, want_ack: bool = False, pki: bool = False, packet_id: int | None = None
    ) -> int:
        """Publish one packet from us; PKI-encrypted to `dest`'s known key when `pki`. Returns its id.

        `packet_id`: publish again under that id (a copy of a packet that may be on air), else a new one.
        """
        packet_id, where, envelope = self._seal(dest, data, want_ack, pki, packet_id)
        self._publish(where, envelope)
        if want_ack:
            self._retransmits.track(packet_id, where, envelope)
        return packet_id

    def _seal(
        self, dest: int, data: mesh_pb2.Data, want_ack: bool, pki: bool, packet_id: int | None = None
    ) -> tuple[int, str, bytes]:
        head = Header(self.identity.node_num, dest, packet_id or self._new_id(), self._hop_limit, want_ack)
        if pki:
            their_key = self.keyring.get(dest)
            if their_key is None:
                raise RadioUnavailable(f"no public key for {node_id(dest)}")
            packet = codec.seal_pki(head, data, self.identity.private_key, their_key)
            channel_id = PKI_CHANNEL
        else:
            packet = codec.seal_channel(head, data, self.channel)
            channel_id = self.channel.name
        if len(packet.encrypted) > limits.DATA_PAYLOAD_LEN:  # what the firmware refuses to put on air
            raise ValueError(f"payload of {len(packet.encrypted)} B is over {limits.DATA_PAYLOAD_LEN} B")
        where = codec.topic(self._cfg.root, channel_id, self.identity.node_num)
        return head.packet_id, where, codec.envelope(packet, channel_id, self.identity.node_num)

    def _publish(self, where: str, envelope: bytes) -> None:
        info = self._client.publish(where, envelope, qos=1)
        # NO_CONN: paho keeps a QoS 1 message and sends it on reconnect, so it counts as accepted.
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise OSError(f"publish refused: {paho.error_string(info.rc)}")

    def send_nodeinfo(self, dest: int = BROADCAST, want_response: bool = False) -> None:
        """Announce our User (with our public key) on the channel, or to one node."""
        user = mesh_pb2.User(
            id=node_id(self.identity.node_num),
            long_name=self._long_name,
            short_name=self._cfg.short_name,
            hw_model=mesh_pb2.HardwareModel.PRIVATE_HW,
            public_key=self.identity.public_key,
        )
        self.publish_data(dest, codec.nodeinfo_data(user, want_response, self._cfg.ok_to_mqtt))
        log.info(
            "sent our NodeInfo to %s",
            "the channel" if dest == BROADCAST else node_id(dest),
            extra={"event": Event.NODEINFO_SENT, "dest": node_id(dest)},
        )

    def _ask_key(self, node: int) -> None:
        self.send_nodeinfo(node, want_response=True)

    @staticmethod
    def _new_id() -> int:
        return 1 + secrets.randbelow(0xFFFFFFFE)

    def send(self, message: Outbound, on_result: Callable[[SendResult], None]) -> int:
        """Publish a text; a DM goes PKI-encrypted (waiting briefly for the asker's key if we lack it)."""
        if not self._up.is_set():
            raise RadioUnavailable("not connected to the broker")
        data = codec.text_data(message.text, message.reply_id, self._cfg.ok_to_mqtt)
        if message.dest == BROADCAST:
            return self.publish_data(BROADCAST, data)
        if not self._key_wait.ready(message.dest):
            return self._no_key(message, data, on_result)
        packet_id = self.publish_data(
            message.dest, data, want_ack=message.want_ack, pki=True, packet_id=message.packet_id
        )
        if message.want_ack:
            self._pending.put(packet_id, on_result)
        return packet_id

    def _no_key(self, message: Outbound, data: mesh_pb2.Data, on_result: Callable[[SendResult], None]) -> int:
        # No legacy channel-key DM (firmware 2.7.14+ rejects them): the channel if policy answers there, else drop.
        if self._dm_on_channel:
            packet_id = self.publish_data(BROADCAST, data)
            log.warning(
                "no public key for %s: answered on channel %s instead",
                node_id(message.dest),
                self.channel.name,
                extra={"event": Event.DM_ON_CHANNEL, "dest": node_id(message.dest)},
            )
            on_result(SendResult(packet_id, AckStatus.IMPLICIT, "ON_CHANNEL"))
            return packet_id
        log.warning(
            "dropped DM to %s: their public key is unknown (no NodeInfo within key_wait_s); a DM is answered only "
            "by DM",
            node_id(message.dest),
            extra={"event": Event.DROPPED, "reason": Reason.NO_PUBKEY, "dest": node_id(message.dest)},
        )
        on_result(SendResult(0, AckStatus.NAKED, "PKI_UNKNOWN_PUBKEY"))
        return 0

    def _retransmit(self) -> None:
        for packet_id, where, envelope in self._retransmits.due():
            log.debug(
                "no ACK yet for packet %d: published it again",
                packet_id,
                extra={"event": Event.RETRANSMITTED, "packet_id": packet_id},
            )
            self._publish(where, envelope)
