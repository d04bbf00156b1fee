"""A virtual node's MQTT gateway, by the firmware's rules (src/mqtt/MQTT.cpp onSend, onReceiveProto).

Uplink: what the node hears on air, unless it came via MQTT; other nodes' packets on a default-key channel only
with the OK-to-MQTT bit; channel packets on `<root>/2/e/<channel>/<!gw>` when uplink is enabled, PKI DMs on
`PKI/<!gw>`. Downlink (subscribed to the channel and `PKI/+` when downlink is enabled): envelopes from other
gateways, marked via_mqtt, a PKI DM only when it is to the gateway or the gateway knows both ends.

The virtual air carries packets decoded. At this boundary the gateway produces the bytes the sender's firmware
would have put on air: the channel key for channel packets and, for PKI DMs, the sender's key pair, which every
virtual node derives from its number (`sim_private_key`); it opens downlinked PKI DMs with the receiver's.
"""

from __future__ import annotations

import logging

import paho.mqtt.client as paho
from meshtastic.protobuf import mesh_pb2
from paho.mqtt.enums import CallbackAPIVersion

from meshbot.core.ids import node_id
from meshbot.core.keytext import parse_psk_bytes
from meshbot.radios.mqtt import codec
from meshbot.radios.mqtt.codec import PKI_CHANNEL, Channel, Dropped
from meshbot.sim.app.topology import BrokerSpec, GatewaySpec
from meshbot.sim.node.node import VirtualNode
from meshbot.sim.rules.handshake import sim_private_key

logger = logging.getLogger(__name__)

_DEFAULT_PSKS = (b"", b"\x01")  # psk.size < 2: the firmware applies DontMqttMeBro to these


class MqttGateway:
    """Uplinks and downlinks for one `VirtualNode`. Start after the node; stop before it."""

    def __init__(self, node: VirtualNode, broker: BrokerSpec, spec: GatewaySpec) -> None:
        self.node = node
        self.broker = broker
        self.spec = spec
        psk = parse_psk_bytes(broker.psk)
        self.default_key = psk in _DEFAULT_PSKS or len(psk) == 1
        self.channel = Channel.from_psk(broker.channel, psk)
        self.gateway_id = node_id(node.node_num)
        self.uplinked = 0
        self.downlinked = 0
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"simgw-{self.gateway_id[1:]}")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect (retrying in the background, as the firmware does) and hook the node's hearing."""
        self.node.on_heard = self.uplink
        self._client.connect_async(self.broker.host, self.broker.port)
        self._client.loop_start()

    def stop(self) -> None:
        """Unhook and disconnect."""
        self.node.on_heard = None
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, *_args: object) -> None:
        if self.spec.downlink:  # MQTT::sendSubscriptions: the channel, and PKI/+ when any channel downlinks
            client.subscribe([(t, 1) for t in codec.subscriptions(self.broker.root, self.broker.channel)])

    # -- uplink ---------------------------------------------------------------------------------------
    def uplink(self, packet: mesh_pb2.MeshPacket) -> None:
        """MQTT::onSend for a packet the node heard (or sent)."""
        if packet.via_mqtt or not self.spec.uplink:
            return
        sender = codec.sender_of(packet)
        ok_bit = bool(packet.decoded.bitfield & codec.OK_TO_MQTT_BIT)
        if sender != self.node.node_num and not ok_bit and self.default_key:
            logger.debug("gateway %s: not uplinking %08x (no OK-to-MQTT)", self.gateway_id, packet.id)
            return
        sealed = self._seal(packet)
        if sealed is None:
            return
        wire, channel_id = sealed
        topic = codec.topic(self.broker.root, channel_id, self.node.node_num)
        self._client.publish(topic, codec.envelope(wire, channel_id, self.node.node_num), qos=1)
        self.uplinked += 1

    def _seal(self, packet: mesh_pb2.MeshPacket) -> tuple[mesh_pb2.MeshPacket, str] | None:
        sender = codec.sender_of(packet)
        head = codec.Header(sender, packet.to, packet.id, packet.hop_limit, packet.want_ack)
        if packet.pki_encrypted:
            their_key = self._key_of(packet.to)
            if their_key is None:
                return None  # the sender could not have encrypted it either
            wire = codec.seal_pki(head, packet.decoded, sim_private_key(sender), their_key)
            channel_id = PKI_CHANNEL
        else:
            wire = codec.seal_channel(head, packet.decoded, self.channel)
            channel_id = self.channel.name
        wire.hop_start = packet.hop_start
        wire.via_mqtt = False
        return wire, channel_id

    def _key_of(self, num: int) -> bytes | None:
        for ident in self.node.known_nodes():
            if ident.num == num and ident.public_key:
                return bytes(ident.public_key)
        return None

    # -- downlink -------------------------------------------------------------------------------------
    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            packet = self._open(msg.payload)
        except Dropped as drop:
            logger.info("gateway %s: dropped downlink on %s: %s", self.gateway_id, msg.topic, drop.detail)
            return
        if packet is not None:
            self.downlinked += 1
            self.node.receive_from_mqtt(packet)

    def _open(self, payload: bytes) -> mesh_pb2.MeshPacket | None:
        packet, channel_id, gateway = codec.parse_envelope(payload)
        sender = codec.sender_of(packet)
        if gateway == self.gateway_id or sender == self.node.node_num:
            return None  # what we uplinked, or sent, ourselves
        if channel_id != PKI_CHANNEL and not (channel_id == self.channel.name and self.spec.downlink):
            return None
        if codec.is_pki(packet, channel_id):
            data = self._open_pki(packet, sender)
            if data is None:
                return None
        else:
            data = codec.open_channel(packet, self.channel)
        out = mesh_pb2.MeshPacket()
        out.CopyFrom(packet)
        out.decoded.CopyFrom(data)  # the virtual air carries packets decoded
        out.via_mqtt = True
        out.channel = 0
        return out

    def _open_pki(self, packet: mesh_pb2.MeshPacket, sender: int) -> mesh_pb2.Data | None:
        known = {ident.num for ident in self.node.known_nodes()}
        if packet.to != self.node.node_num and not (sender in known and packet.to in known):
            return None  # onReceiveProto: only to us, or both ends in our node DB
        sender_key = self._key_of(sender)
        if sender_key is None:
            return None
        return codec.open_pki(packet, sim_private_key(packet.to), sender_key)
