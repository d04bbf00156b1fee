"""Over MQTT (a real mosquitto): the node directory fills from a gateway's channel traffic."""

from __future__ import annotations

from pathlib import Path

from meshbot.core.directory import node_label
from meshbot.storage.directory import DirectoryTable
from meshbot.storage.store import Store
from tests.conftest import wait_until
from tests.mqtt_support import Broker
from tests.test_mqtt_sim import ALICE, broker, start  # the broker fixture


def test_the_directory_fills_from_a_gateways_channel_traffic(broker: Broker, tmp_path: Path) -> None:
    mesh, daemon, _model = start(broker, tmp_path, alice_ok_to_mqtt=True)
    try:
        directory = daemon.directory
        assert directory is not None
        own = directory.own()
        assert own is not None and own.node == daemon.node.node_num  # the bot's own node, from its identity
        alice = mesh.node("Alice")
        alice.position_fix, alice.precision_bits = (52.3702, 4.8952), 16  # she shares a coarse spot
        alice.announce()
        wait_until(lambda: mesh.air.idle(), timeout=20)
        assert alice.broadcast_position()
        wait_until(lambda: mesh.air.idle(), timeout=20)
        alice.broadcast_telemetry()
        sent = alice.own_device_metrics()

        def learnt() -> bool:
            record = directory.record(ALICE)
            return record is not None and record.position is not None and record.device is not None

        wait_until(learnt, timeout=30)
        record = directory.record(ALICE)
        assert record is not None and record.position is not None and record.device is not None
        assert record.user is not None and record.user.short_name  # her NodeInfo, uplinked as well
        assert record.heard is not None and record.heard.via_mqtt  # heard through the broker, said so
        assert record.position.precision_bits == 16  # the precision she shared, no finer
        assert abs(record.position.lat - 52.3702) < 0.01 and record.position.uncertainty_m > 100
        assert record.device.battery_level == sent.battery_level
        assert directory.find(node_label(ALICE)) == record
    finally:
        daemon.stop(grace_s=2.0)
        mesh.stop()
    with Store(tmp_path / "b.db") as store:  # what the bot learnt is in its store for the next start
        assert ALICE in {r.node for r in DirectoryTable(store).load()}
