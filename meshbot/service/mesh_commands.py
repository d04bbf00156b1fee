"""The mesh commands: !nodes, !where, !mesh and !node NAME, answered from the node directory in one fragment.

Privacy: with `[mesh_directory] location_commands = false` there is no !where and no distance anywhere. A
node's coordinates only ever go to that node itself (its own !where); a channel reply gives other nodes'
distances without a bearing, so nobody's spot can be worked out from the channel.
"""

from __future__ import annotations

from collections.abc import Callable

from meshbot.core.config import Config
from meshbot.core.directory import (
    NodeRecord,
    Position,
    ago_text,
    battery_text,
    bearing_deg,
    distance_m,
    distance_text,
    heard_within,
    hops_text,
    node_label,
)
from meshbot.core.domain import NodeDirectory
from meshbot.core.geo import compass
from meshbot.core.prompting import clean_name

HOUR_S, DAY_S = 3600.0, 86_400.0
MAX_LISTED = 6
LONG_NAME_CHARS = 40  # the apps allow 39 bytes of long name
NO_OWN_POSITION = "no position from you yet: share it in the app"


def name_of(record: NodeRecord) -> str:
    """A node's short name fit to print (cleaned: it is whatever its owner typed), else its `!id`."""
    raw = record.user.short_name if record.user else None
    return clean_name(raw) or node_label(record.node)


def snr_text(record: NodeRecord) -> str:
    """ "SNR 6.5dB", or "SNR ?" when the last packet came without one."""
    snr = record.heard.snr if record.heard else None
    return f"SNR {snr:.1f}dB" if snr is not None else "SNR ?"


def _where_to(a: Position, b: Position, with_bearing: bool) -> str:
    text = distance_text(a, b)
    return f"{text} {compass(bearing_deg(a, b))}" if with_bearing else text


class MeshCommands:
    """The handlers behind the mesh commands; each takes the asker's node, whether it is a DM, and the argument."""

    def __init__(self, cfg: Config, directory: NodeDirectory, budget_bytes: int) -> None:
        self._cfg = cfg
        self._dir = directory
        self._budget = budget_bytes  # what one fragment may hold after the AI tag (the intake cuts the rest)

    @property
    def locations(self) -> bool:
        """True when positions and distances may be talked about."""
        return self._cfg.mesh_directory.location_commands

    def _peers(self) -> list[NodeRecord]:
        return [r for r in self._dir.records() if not r.is_self]

    def nodes(self, asker: int, is_dm: bool, argument: str = "") -> str:
        """Nodes heard in the last hour and day, then the most recently heard: name, hops, SNR, minutes ago."""
        now, peers = self._dir.now(), self._peers()
        head = f"{heard_within(peers, now, HOUR_S)} nodes heard in 1h, {heard_within(peers, now, DAY_S)} in 24h"
        listed = [r for r in peers if r.heard is not None][:MAX_LISTED]
        if not listed:
            return f"{head}. None heard yet."
        text = f"{head}:"
        for record in listed:
            item = (
                f" {name_of(record)} {hops_text(record.heard)} {snr_text(record)} {ago_text(now - record.last_heard)};"
            )
            if len((text + item).encode()) > self._budget:
                break
            text += item
        return text.rstrip(";")

    def where(self, asker: int, is_dm: bool, argument: str = "") -> str:
        """The asker's last known position and its age, and how far and which way the bot and the nearest node are."""
        if not self.locations:
            return "Location commands are off on this bot."
        me = self._dir.record(asker)
        if me is None or me.position is None:
            return f"{NO_OWN_POSITION.capitalize()}."
        pos, now = me.position, self._dir.now()
        spot = f"{pos.lat:.{_places(pos)}f},{pos.lon:.{_places(pos)}f}"
        if pos.uncertainty_m:
            spot += f" (±{_km(pos.uncertainty_m)})"
        parts = [f"You: {spot}, {_ago(now - pos.at)}"]
        own = self._dir.own()
        if own is not None and own.position is not None:
            parts.append(f"bot {name_of(own)} {_where_to(pos, own.position, True)}")
        nearest = self._nearest(asker, pos)
        if nearest is not None:
            assert nearest.position is not None
            parts.append(f"nearest {name_of(nearest)} {_where_to(pos, nearest.position, is_dm)}")
        else:
            parts.append("no other node has shared a position")
        return "; ".join(parts)

    def _nearest(self, asker: int, pos: Position) -> NodeRecord | None:
        located = [(r, r.position) for r in self._peers() if r.node != asker and r.position is not None]
        if not located:
            return None
        return min(located, key=lambda pair: distance_m(pos, pair[1]))[0]

    def mesh(self, asker: int, is_dm: bool, argument: str = "") -> str:
        """The bot node's channel load and air time, the nodes active, and the bot node's battery."""
        now, peers = self._dir.now(), self._peers()
        own = self._dir.own()
        device = own.device if own is not None else None
        if device is not None and device.channel_utilization is not None:
            load = f"channel util {device.channel_utilization:.1f}%"
            load += f", air tx {device.air_util_tx:.1f}%" if device.air_util_tx is not None else ", air tx ?"
        else:
            load = "channel util ? (no telemetry from the bot's node yet)"
        active = f"active {heard_within(peers, now, HOUR_S)} in 1h, {heard_within(peers, now, DAY_S)} in 24h"
        battery = battery_text(device)
        return f"Mesh: {load}; {active}; bot battery {battery or '? (not reported)'}"

    def node(self, asker: int, is_dm: bool, argument: str = "") -> str:
        """One node by short name, long name or `!id`: last heard, hops, SNR, battery, distance from the asker."""
        name = argument.strip()
        if not name:
            return "Say which node: !node NAME (short name, long name or !id)."
        record = self._dir.find(name)
        if record is None:
            return f"No node called {clean_name(name) or '?'} heard."
        now = self._dir.now()
        long = clean_name(record.user.long_name, LONG_NAME_CHARS) if record.user else None
        title = f"{name_of(record)}{f' ({long})' if long else ''} {node_label(record.node)}"
        heard = f"heard {_ago(now - record.last_heard)}" if record.heard else "not heard yet"
        parts = [title, heard, hops_text(record.heard), snr_text(record)]
        parts.append(f"battery {battery_text(record.device) or '? (not reported)'}")
        env = record.environment
        if env is not None and env.temperature is not None:  # environment metrics, when the node has a sensor
            parts.append(f"{env.temperature:.1f}°C")
        if self.locations and record.node != asker:
            parts.append(self._distance_from(asker, record, is_dm))
        return ", ".join(parts)

    def _distance_from(self, asker: int, record: NodeRecord, is_dm: bool) -> str:
        mine = self._dir.record(asker)
        if mine is None or mine.position is None:
            return NO_OWN_POSITION
        if record.position is None:
            return f"no position from {name_of(record)}"
        return f"{_where_to(mine.position, record.position, is_dm)} from you"

    def handlers(self) -> dict[str, Callable[[int, bool, str], str]]:
        """Command name to handler."""
        return {"nodes": self.nodes, "where": self.where, "mesh": self.mesh, "node": self.node}


def _places(pos: Position) -> int:
    """Decimal places the position's precision supports (never more than it has)."""
    slack = pos.uncertainty_m
    if not slack:
        return 5  # about a metre
    for places, metres in ((1, 11_132), (2, 1_113), (3, 111), (4, 11)):
        if slack >= metres / 2:
            return places
    return 5


def _km(meters: float) -> str:
    return f"{meters / 1000:.1f} km" if meters >= 1000 else f"{round(meters)} m"


def _ago(seconds: float) -> str:
    """ "just now", "4m ago", "2h ago"."""
    age = ago_text(seconds)
    return "just now" if age == "now" else f"{age} ago"
