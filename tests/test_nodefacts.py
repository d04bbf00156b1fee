"""Packets to node reports (radios/nodefacts.py): what a packet says, nothing more, and never a crash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshbot.core.directory import Heard
from meshbot.radios.nodefacts import report_of, report_of_nodeinfo
from meshbot.radios.protobufs import mesh_pb2, portnums_pb2, telemetry_pb2

NOW = 1_800_000_000.0
PORTS = [
    portnums_pb2.NODEINFO_APP,
    portnums_pb2.POSITION_APP,
    portnums_pb2.TELEMETRY_APP,
    portnums_pb2.NEIGHBORINFO_APP,
    portnums_pb2.TEXT_MESSAGE_APP,
]


def packet(portnum: int, payload: bytes, **fields: object) -> mesh_pb2.MeshPacket:
    p = mesh_pb2.MeshPacket(id=5, to=0xFFFFFFFF, **fields)  # type: ignore[arg-type]
    setattr(p, "from", 0x0A11CE00)
    p.decoded.portnum = portnum  # type: ignore[assignment]
    p.decoded.payload = payload
    return p


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PORTS), st.binary(max_size=120), st.integers(0, 7), st.integers(0, 7))
def test_any_payload_gives_a_report_of_who_was_heard(port: int, payload: bytes, start: int, limit: int) -> None:
    report = report_of(packet(port, payload, hop_start=start, hop_limit=limit), NOW)
    assert report.node == 0x0A11CE00 and report.heard is not None and report.heard.at == NOW
    assert report.heard.hops is None or 0 <= report.heard.hops <= 7


def test_a_telemetry_packet_gives_only_the_metrics_it_carries() -> None:
    tele = telemetry_pb2.Telemetry(time=int(NOW - 60), device_metrics=telemetry_pb2.DeviceMetrics(battery_level=87))
    report = report_of(packet(portnums_pb2.TELEMETRY_APP, tele.SerializeToString(), rx_snr=6.25, rx_rssi=-90), NOW)
    assert report.device is not None and report.device.battery_level == 87 and report.device.at == NOW - 60
    assert report.device.voltage is None and report.device.channel_utilization is None  # not sent: not invented
    assert report.heard == Heard(NOW, 6.25, -90, None, False)


def test_positions_keep_their_precision_and_no_fix_is_no_position() -> None:
    pos = mesh_pb2.Position(latitude_i=523_702_000, longitude_i=48_952_000, precision_bits=13)
    report = report_of(packet(portnums_pb2.POSITION_APP, pos.SerializeToString(), hop_start=3, hop_limit=1), NOW)
    assert report.position is not None and report.position.precision_bits == 13
    assert report.position.uncertainty_m > 2000 and report.heard is not None and report.heard.hops == 2
    nofix = mesh_pb2.Position(latitude_i=0, longitude_i=0)
    assert report_of(packet(portnums_pb2.POSITION_APP, nofix.SerializeToString()), NOW).position is None


def test_over_mqtt_no_signal_figures_are_made_up() -> None:
    report = report_of(packet(portnums_pb2.TEXT_MESSAGE_APP, b"hi"), NOW, via_mqtt=True)
    assert report.heard == Heard(NOW, None, None, None, True)


def test_a_node_db_entry_keeps_its_own_last_heard() -> None:
    info = mesh_pb2.NodeInfo(num=7, snr=4.5, last_heard=int(NOW - 600), hops_away=1)
    info.user.short_name, info.user.long_name = "BRVO", "Bravo Base"
    info.device_metrics.battery_level = 101
    report = report_of_nodeinfo(info, NOW)
    assert report.heard == Heard(NOW - 600, 4.5, None, 1, False)
    assert report.user is not None and report.user.short_name == "BRVO"
    assert report.device is not None and report.device.battery_level == 101 and report.device.at == NOW - 600
    never = report_of_nodeinfo(mesh_pb2.NodeInfo(num=8), NOW)
    assert never.heard is None and never.user is None
