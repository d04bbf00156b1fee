"""Meshtastic packets and node-DB entries to neutral `NodeReport`s for the node directory. Pure, no I/O.

Both transports use it: the radio with the library's raw `MeshPacket` and its node DB's `NodeInfo`, MQTT with
the packets it opens from the broker. The port names and protobufs stay here; the directory never sees them.
A figure the packet does not carry (proto3 `optional` unset) stays None: nothing is filled in.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from meshbot.core.directory import (
    DeviceMetrics,
    EnvironmentMetrics,
    Heard,
    Neighbor,
    NodeReport,
    NodeUser,
    Position,
)
from meshbot.radios.protobufs import config_pb2, mesh_pb2, portnums_pb2, telemetry_pb2

MAX_NEIGHBORS = 32  # NeighborInfo carries at most 10 today; bound what a malformed one could make us keep


def heard_of(packet: mesh_pb2.MeshPacket, now: float, via_mqtt: bool = False) -> Heard:
    """How `packet` reached us: now, its last hop's SNR and RSSI, and the hops it travelled."""
    hops = packet.hop_start - packet.hop_limit if packet.hop_start and packet.hop_start >= packet.hop_limit else None
    signal = packet.rx_rssi != 0 or packet.rx_snr != 0  # both 0: the radio did not measure (a packet from MQTT)
    return Heard(
        at=now,
        snr=round(float(packet.rx_snr), 2) if signal else None,
        rssi=int(packet.rx_rssi) if packet.rx_rssi else None,
        hops=hops,
        via_mqtt=via_mqtt or packet.via_mqtt,
    )


def user_of(user: mesh_pb2.User) -> NodeUser:
    """A User protobuf's names, hardware and role."""
    return NodeUser(
        short_name=user.short_name,
        long_name=user.long_name,
        hw_model=mesh_pb2.HardwareModel.Name(user.hw_model) if user.hw_model in mesh_pb2.HardwareModel.values() else "",
        role=_role_name(user.role),
    )


def _role_name(role: int) -> str:
    roles = config_pb2.Config.DeviceConfig.Role
    return roles.Name(role) if role in roles.values() else ""


def position_of(pos: mesh_pb2.Position, now: float, told_at: float | None = None) -> Position | None:
    """The shared position with its precision, or None when it has no fix (no coordinates, or 0,0)."""
    if not (pos.HasField("latitude_i") and pos.HasField("longitude_i")):
        return None
    if pos.latitude_i == 0 and pos.longitude_i == 0:
        return None  # firmware sends 0,0 when it has no fix
    if not (-900_000_000 <= pos.latitude_i <= 900_000_000 and -1_800_000_000 <= pos.longitude_i <= 1_800_000_000):
        return None
    return Position(
        latitude_i=pos.latitude_i,
        longitude_i=pos.longitude_i,
        altitude=pos.altitude if pos.HasField("altitude") else None,
        precision_bits=pos.precision_bits or 32,  # 0: a firmware from before precision, which sent full precision
        at=float(pos.time) if 0 < pos.time <= now + 3600 else (now if told_at is None else told_at),
    )


def device_of(metrics: telemetry_pb2.DeviceMetrics, at: float) -> DeviceMetrics:
    """Device metrics, each None unless the node sent it."""
    return DeviceMetrics(
        battery_level=metrics.battery_level if metrics.HasField("battery_level") else None,
        voltage=round(metrics.voltage, 3) if metrics.HasField("voltage") else None,
        channel_utilization=round(metrics.channel_utilization, 2) if metrics.HasField("channel_utilization") else None,
        air_util_tx=round(metrics.air_util_tx, 2) if metrics.HasField("air_util_tx") else None,
        uptime_s=metrics.uptime_seconds if metrics.HasField("uptime_seconds") else None,
        at=at,
    )


def environment_of(metrics: telemetry_pb2.EnvironmentMetrics, at: float) -> EnvironmentMetrics:
    """Environment metrics, each None unless the node sent it."""
    return EnvironmentMetrics(
        temperature=round(metrics.temperature, 2) if metrics.HasField("temperature") else None,
        relative_humidity=round(metrics.relative_humidity, 2) if metrics.HasField("relative_humidity") else None,
        barometric_pressure=round(metrics.barometric_pressure, 2) if metrics.HasField("barometric_pressure") else None,
        at=at,
    )


def report_of(packet: mesh_pb2.MeshPacket, now: float, via_mqtt: bool = False) -> NodeReport:
    """What one packet says about its sender: always that it was heard, and its NodeInfo, Position,
    Telemetry or NeighborInfo when it carries one (a payload that does not parse adds nothing)."""
    sender = getattr(packet, "from")
    report = NodeReport(sender, heard=heard_of(packet, now, via_mqtt))
    if not packet.HasField("decoded") or not packet.decoded.payload:
        return report  # encrypted for someone else, or a request (empty): it was heard, and that is all
    port, payload = packet.decoded.portnum, packet.decoded.payload
    try:
        if port == portnums_pb2.NODEINFO_APP:
            return _with(report, user=user_of(mesh_pb2.User.FromString(payload)))
        if port == portnums_pb2.POSITION_APP:
            return _with(report, position=position_of(mesh_pb2.Position.FromString(payload), now))
        if port == portnums_pb2.TELEMETRY_APP:
            return _telemetry(report, telemetry_pb2.Telemetry.FromString(payload), now)
        if port == portnums_pb2.NEIGHBORINFO_APP:
            info = mesh_pb2.NeighborInfo.FromString(payload)
            if info.node_id in (0, sender):
                neighbors = tuple(Neighbor(n.node_id, round(n.snr, 2)) for n in info.neighbors[:MAX_NEIGHBORS])
                return _with(report, neighbors=neighbors)
    except DecodeError:
        pass
    return report


def _with(report: NodeReport, **facts: object) -> NodeReport:
    from dataclasses import replace

    return replace(report, **facts)  # type: ignore[arg-type]


def _telemetry(report: NodeReport, telemetry: telemetry_pb2.Telemetry, now: float) -> NodeReport:
    at = float(telemetry.time) if 0 < telemetry.time <= now + 3600 else now
    if telemetry.HasField("device_metrics"):
        return _with(report, device=device_of(telemetry.device_metrics, at))
    if telemetry.HasField("environment_metrics"):
        return _with(report, environment=environment_of(telemetry.environment_metrics, at))
    return report


def report_of_nodeinfo(info: mesh_pb2.NodeInfo, now: float, is_self: bool = False) -> NodeReport:
    """What the radio's node DB holds about one node (at connect): its own last-heard time, SNR and hops."""
    heard = None
    if 0 < info.last_heard <= now + 3600:
        heard = Heard(
            at=float(info.last_heard),
            snr=round(info.snr, 2) if info.snr else None,
            hops=info.hops_away if info.HasField("hops_away") else None,
            via_mqtt=info.via_mqtt,
        )
    at = float(info.last_heard) if heard else 0.0
    return NodeReport(
        info.num,
        heard=heard,
        user=user_of(info.user) if info.HasField("user") else None,
        position=position_of(info.position, now, at) if info.HasField("position") else None,
        device=device_of(info.device_metrics, at) if info.HasField("device_metrics") else None,
        is_self=is_self,
    )
