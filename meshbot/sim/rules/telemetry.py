"""Position and device-telemetry packets as a node hands them to its client. Pure.

The library files both in its node DB (`_onPositionReceive`, `_onTelemetryReceive`): a virtual node injects
them (`VirtualNode.inject_packet`) to give the bot a node's position or its own battery level while running.
"""

from __future__ import annotations

from meshtastic.protobuf import mesh_pb2, portnums_pb2, telemetry_pb2

from meshbot.core import limits


def _packet(sender: int, packet_id: int, portnum: int, payload: bytes, rx_time: int) -> mesh_pb2.MeshPacket:
    packet = mesh_pb2.MeshPacket()
    setattr(packet, "from", sender)
    packet.to = limits.BROADCAST_NUM
    packet.id = packet_id
    packet.hop_start = packet.hop_limit = 3
    packet.rx_time = rx_time
    packet.decoded.portnum = portnum
    packet.decoded.payload = payload
    return packet


def position_packet(
    sender: int, packet_id: int, latitude: float, longitude: float, *, fix_time: int, rx_time: int = 0
) -> mesh_pb2.MeshPacket:
    """A POSITION_APP broadcast: degrees as the firmware's 1e-7 integers, `fix_time` in epoch seconds."""
    position = mesh_pb2.Position(
        latitude_i=round(latitude * 1e7), longitude_i=round(longitude * 1e7), time=fix_time, precision_bits=32
    )
    return _packet(sender, packet_id, portnums_pb2.POSITION_APP, position.SerializeToString(), rx_time or fix_time)


def device_metrics_packet(
    sender: int, packet_id: int, battery_level: int, voltage: float, *, when: int
) -> mesh_pb2.MeshPacket:
    """A TELEMETRY_APP broadcast of device metrics: battery percent (above 100: external power) and volts."""
    telemetry = telemetry_pb2.Telemetry(time=when)
    telemetry.device_metrics.battery_level = battery_level
    telemetry.device_metrics.voltage = voltage
    return _packet(sender, packet_id, portnums_pb2.TELEMETRY_APP, telemetry.SerializeToString(), when)
