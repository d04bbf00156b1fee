"""The radio transport feeds the node directory: the node DB after a fast connect (nonce 69421), on every
connect, and every packet heard (Position, Telemetry, SNR and hops); the bot's own device metrics too."""

from __future__ import annotations

import time

from meshtastic.protobuf import mesh_pb2, portnums_pb2, telemetry_pb2

from meshbot.core.config import MeshDirectoryConfig, RadioConfig
from meshbot.core.domain import NodeReporter
from meshbot.radios.meshtastic_lib import MeshtasticRadio
from meshbot.service.directory import MeshDirectory
from meshbot.sim.node.node import VirtualNode
from meshbot.sim.rules.handshake import Identity
from tests.conftest import wait_until

BOT, ALICE, CAROL = 0x0BB0_0001, 0x0A11_CE00, 0x0CA0_0001


def packet_from(sender: int, portnum: int, payload: bytes, *, hops: int = 2, snr: float = 5.5) -> mesh_pb2.MeshPacket:
    packet = mesh_pb2.MeshPacket(to=0xFFFFFFFF, id=int(time.time() * 1000) & 0xFFFFFFF, hop_start=3, hop_limit=3 - hops)
    setattr(packet, "from", sender)
    packet.rx_snr, packet.rx_rssi, packet.rx_time = snr, -91, int(time.time())
    packet.decoded.portnum = portnum  # type: ignore[assignment]
    packet.decoded.payload = payload
    return packet


def test_the_radio_seeds_and_feeds_the_directory_and_asks_again_after_a_reconnect() -> None:
    directory = MeshDirectory(MeshDirectoryConfig())
    with VirtualNode(BOT, peers=[(ALICE, "Alice Handheld", "ALI")], position=(47.4988, 8.7237)) as node:
        radio = MeshtasticRadio(
            RadioConfig(host=f"127.0.0.1:{node.port}", connect_timeout_s=10, no_nodes=True), backoff_s=(0.2, 1.0)
        )
        assert isinstance(radio, NodeReporter)
        radio.report_nodes(directory.note)
        radio.start(lambda msg: None, lambda event: None)
        try:
            # Connected node-less (fast), then the node list alone: Alice is known without a packet from her.
            wait_until(lambda: directory.record(ALICE) is not None, timeout=10)
            alice = directory.record(ALICE)
            assert alice is not None and alice.user is not None and alice.user.long_name == "Alice Handheld"
            assert node.handshakes == 1  # the node list is not a second config download
            own = directory.own()
            assert own is not None and own.node == BOT and own.position is not None  # our own node DB entry

            pos = mesh_pb2.Position(latitude_i=473_769_000, longitude_i=85_417_000, time=int(time.time()))
            pos.precision_bits = 16
            node.inject_packet(packet_from(ALICE, portnums_pb2.POSITION_APP, pos.SerializeToString()))
            metrics = telemetry_pb2.DeviceMetrics(battery_level=42, voltage=3.7, channel_utilization=9.5)
            tele = telemetry_pb2.Telemetry(time=int(time.time()), device_metrics=metrics)
            node.inject_packet(packet_from(ALICE, portnums_pb2.TELEMETRY_APP, tele.SerializeToString()))
            node.broadcast_telemetry()  # our own node's device metrics reach its client too

            def fed() -> bool:
                rec, me = directory.record(ALICE), directory.own()
                return bool(rec and rec.position and rec.device and me and me.device)

            wait_until(fed, timeout=10)
            alice = directory.record(ALICE)
            assert alice is not None and alice.position is not None and alice.device is not None
            assert alice.position.precision_bits == 16 and alice.position.latitude_i == 473_769_000
            assert alice.device.battery_level == 42 and alice.device.air_util_tx is None  # not sent, not invented
            assert alice.heard is not None and alice.heard.hops == 2 and alice.heard.snr == 5.5
            me = directory.own()
            assert me is not None and me.device is not None and me.device.battery_level is not None
            assert me.heard is None  # our own packets say nothing about how we hear ourselves

            # While the link is down the node learns Carol; the reconnect asks for the node list again.
            with node._lock:
                node._known[CAROL] = Identity(CAROL, "Carol Base", "CARL", last_heard=int(time.time()))
            node.drop_client(reset=True)
            wait_until(lambda: directory.record(CAROL) is not None, timeout=20)
            assert node.handshakes == 2
        finally:
            radio.close()
