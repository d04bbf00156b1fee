"""What the console reads from the node directory (service/directory.py): nodes heard, the bot node's figures."""

from __future__ import annotations

from typing import Protocol

from meshbot.core.directory import NodeRecord, heard_within
from meshbot.core.metrics import DeviceFigures


class NodeRecords(Protocol):
    """The directory's read side the console needs."""

    def now(self) -> float:
        """Wall-clock epoch seconds."""

    def records(self) -> list[NodeRecord]:
        """Every node it knows."""

    def own(self) -> NodeRecord | None:
        """The bot's own node."""


class DirectoryFigures:
    """core.metrics.NodeFigures from the node directory."""

    def __init__(self, directory: NodeRecords) -> None:
        self._directory = directory

    def nodes_heard(self, window_s: float) -> int:
        """Nodes (not the bot's own) heard within `window_s`."""
        return heard_within(self._directory.records(), self._directory.now(), window_s)

    def own_device(self) -> DeviceFigures | None:
        """The bot node's last device telemetry, or None before its first."""
        own = self._directory.own()
        device = own.device if own is not None else None
        if device is None:
            return None
        return DeviceFigures(device.battery_level, device.channel_utilization, device.air_util_tx)
