"""The node directory as the emergency lane's and the power monitor's source of positions and battery figures.

Both were first written against the radio's own node DB; the directory holds the same facts on every transport
(over MQTT too) and keeps them across restarts, so it is what they read.
"""

from __future__ import annotations

from meshbot.core.domain import NodeDirectory
from meshbot.core.emergency import Position
from meshbot.core.power import DeviceMetrics


class DirectoryFacts:
    """`PositionSource` and `DeviceMetricsSource` over a node directory."""

    def __init__(self, directory: NodeDirectory) -> None:
        self._directory = directory

    def position_of(self, node: int) -> Position | None:
        """The node's last shared position, as precise as it shared it; None when it never did."""
        record = self._directory.record(node)
        pos = record.position if record is not None else None
        if pos is None or (pos.latitude_i == 0 and pos.longitude_i == 0):
            return None  # the firmware's "no fix"
        altitude = float(pos.altitude) if pos.altitude is not None else None
        return Position(pos.lat, pos.lon, pos.at or None, altitude)

    def device_metrics_of(self, node: int) -> DeviceMetrics | None:
        """The node's last battery level and voltage; None when it reported no device metrics."""
        record = self._directory.record(node)
        device = record.device if record is not None else None
        if device is None:
            return None
        return DeviceMetrics(device.battery_level, device.voltage)

    def short_name_of(self, node: int) -> str | None:
        """The node's short name as its owner set it."""
        return self._directory.short_name_of(node)
