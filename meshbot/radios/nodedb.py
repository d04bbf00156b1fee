"""What the attached node says about itself and the mesh: its config at connect, and the library's node DB.

`LibraryNodeDb` is a mixin of `MeshtasticRadio` (its reads of the interface's `nodesByNum`); the channel
rules are pure. No `meshtastic` import: the config enums come from `protobufs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshbot.core import limits
from meshbot.core.domain import LocalNode
from meshbot.core.emergency import Position
from meshbot.core.power import DeviceMetrics
from meshbot.radios.protobufs import config_pb2


def preset_channel_name(modem_preset: str) -> str:
    """The name the apps show for a preset's default channel: LONG_FAST -> "LongFast"."""
    return "".join(word.capitalize() for word in modem_preset.split("_"))


def public_channels(channels: Any, modem_preset: str) -> frozenset[int] | None:
    """Indices of enabled channels that are the mesh's default public one: default key, preset's name."""
    if not channels:
        return None  # the node did not send its channels: let policy assume index 0
    public = set()
    for chan in channels:
        if chan.role == 0:  # DISABLED
            continue
        settings = chan.settings
        default_key = bytes(settings.psk) in (b"", b"\x01")  # none, or "AQ==": the key everyone has
        if default_key and settings.name in ("", preset_channel_name(modem_preset)):
            public.add(chan.index)
    return frozenset(public)


class LibraryNodeDb:
    """The node DB reads of `MeshtasticRadio`. Expects the attribute it sets up."""

    _iface: Any

    @staticmethod
    def _read_local_node(iface: Any) -> LocalNode:
        lora = iface.localNode.localConfig.lora
        lora_cls = config_pb2.Config.LoRaConfig
        preset_name = lora_cls.ModemPreset.Name(lora.modem_preset)
        return LocalNode(
            public_channels=public_channels(getattr(iface.localNode, "channels", None), preset_name),
            node_num=iface.myInfo.my_node_num,
            short_name=iface.getShortName() or "",
            long_name=iface.getLongName() or "",
            modem_preset=lora_cls.ModemPreset.Name(lora.modem_preset),
            region=lora_cls.RegionCode.Name(lora.region),
            hop_limit=lora.hop_limit or limits.DEFAULT_HOP_LIMIT,
            # A node whose config was never read says nothing: assume it can (the field's proto default is off).
            can_transmit=bool(lora.tx_enabled) or not iface.localNode.localConfig.HasField("lora"),
        )

    def short_name_of(self, node: int) -> str | None:
        """The node's short name from the library's node DB (filled by NodeInfo packets), or None."""
        iface = self._iface
        nodes = getattr(iface, "nodesByNum", None) or {}
        entry = nodes.get(node) or {}
        name = entry.get("user", {}).get("shortName") if isinstance(entry, dict) else None
        return name if isinstance(name, str) else None

    def _node_entry(self, node: int) -> Mapping[str, Any]:
        nodes = getattr(self._iface, "nodesByNum", None) or {}
        entry = nodes.get(node)
        return entry if isinstance(entry, dict) else {}

    def position_of(self, node: int) -> Position | None:
        """The node's last position from the library's node DB (its NodeInfo at connect, POSITION packets since)."""
        pos = self._node_entry(node).get("position") or {}
        lat, lon = pos.get("latitude"), pos.get("longitude")
        if not isinstance(lat, int | float) or not isinstance(lon, int | float) or (lat == 0 and lon == 0):
            return None  # the firmware's "no fix" is 0,0
        when, alt = pos.get("time"), pos.get("altitude")
        return Position(
            float(lat),
            float(lon),
            float(when) if isinstance(when, int | float) and when > 0 else None,
            float(alt) if isinstance(alt, int | float) else None,
        )

    def device_metrics_of(self, node: int) -> DeviceMetrics | None:
        """The node's last device metrics from the node DB (NodeInfo at connect, TELEMETRY packets since)."""
        metrics = self._node_entry(node).get("deviceMetrics")
        if not isinstance(metrics, dict):
            return None
        level, volts = metrics.get("batteryLevel"), metrics.get("voltage")
        return DeviceMetrics(
            int(level) if isinstance(level, int | float) else None,
            float(volts) if isinstance(volts, int | float) else None,
        )

    def known_nodes(self) -> list[dict[str, Any]]:
        """The node list the attached node sent at connect (none with radio.no_nodes): num, names, hops, SNR."""
        nodes = getattr(self._iface, "nodesByNum", None) or {}
        listed = []
        for num, entry in sorted(nodes.items()):
            user = entry.get("user", {}) if isinstance(entry, dict) else {}
            listed.append(
                {
                    "num": int(num),
                    "long_name": str(user.get("longName", "")),
                    "short_name": str(user.get("shortName", "")),
                    "hops": entry.get("hopsAway") if isinstance(entry, dict) else None,
                    "snr": entry.get("snr") if isinstance(entry, dict) else None,
                }
            )
        return listed
