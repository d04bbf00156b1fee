"""What the bot knows about the nodes of its mesh: records, merging reports, distances and bearings. Pure.

A transport turns what it hears (a node's NodeInfo, Position, Telemetry or NeighborInfo, and the SNR, RSSI and
hops of any packet) into a neutral `NodeReport`; the directory merges reports into one `NodeRecord` per node.
Nothing here trusts a figure more than the mesh gave it: a position keeps the precision its node shared (its
`precision_bits`), and a distance to a coarse position is said with that uncertainty, never finer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from meshbot.core import geo

# mesh.proto: latitude_i / longitude_i are degrees * 1e7; precision_bits 32 (or unset, 0) is full precision.
DEGREES_PER_UNIT = 1e-7
FULL_PRECISION_BITS = 32
METERS_PER_DEGREE = 111_320.0
BATTERY_POWERED = 101  # telemetry.proto: battery_level above 100 means "on external power"


@dataclass(frozen=True)
class Heard:
    """How one packet from a node reached us: wall time, and the last hop's signal when the radio said."""

    at: float  # epoch seconds
    snr: float | None = None
    rssi: int | None = None
    hops: int | None = None
    via_mqtt: bool = False


@dataclass(frozen=True)
class NodeUser:
    """A node's names as its owner set them (raw, untrusted) and its hardware."""

    short_name: str = ""
    long_name: str = ""
    hw_model: str = ""
    role: str = ""


@dataclass(frozen=True)
class Position:
    """A shared position, exactly as precise as its node made it (the integers of the packet)."""

    latitude_i: int
    longitude_i: int
    altitude: int | None = None
    precision_bits: int = FULL_PRECISION_BITS
    at: float = 0.0  # when the node said it was there (its own time, else when we heard it)

    @property
    def lat(self) -> float:
        """Latitude in degrees."""
        return self.latitude_i * DEGREES_PER_UNIT

    @property
    def lon(self) -> float:
        """Longitude in degrees."""
        return self.longitude_i * DEGREES_PER_UNIT

    @property
    def uncertainty_m(self) -> float:
        """How far off the true spot may be: half the grid the node rounded to (0 at full precision)."""
        bits = self.precision_bits if 0 < self.precision_bits < FULL_PRECISION_BITS else FULL_PRECISION_BITS
        if bits >= FULL_PRECISION_BITS:
            return 0.0
        return (1 << (FULL_PRECISION_BITS - bits)) * DEGREES_PER_UNIT * METERS_PER_DEGREE / 2


@dataclass(frozen=True)
class DeviceMetrics:
    """A node's own figures (telemetry.proto DeviceMetrics); None: not reported."""

    battery_level: int | None = None  # percent; 101: on external power
    voltage: float | None = None
    channel_utilization: float | None = None  # percent of air time the node hears in use
    air_util_tx: float | None = None  # percent of the last hour the node itself transmitted
    uptime_s: int | None = None
    at: float = 0.0


@dataclass(frozen=True)
class EnvironmentMetrics:
    """A node's sensor figures (telemetry.proto EnvironmentMetrics); None: not reported."""

    temperature: float | None = None
    relative_humidity: float | None = None
    barometric_pressure: float | None = None
    at: float = 0.0


@dataclass(frozen=True)
class Neighbor:
    """A node another node hears directly, with the SNR it hears it at (NeighborInfo)."""

    node: int
    snr: float | None = None


_T = TypeVar("_T", "Position", "EnvironmentMetrics")


@dataclass(frozen=True)
class NodeReport:
    """One thing a transport learnt about a node: the neutral event both transports feed the directory."""

    node: int
    heard: Heard | None = None  # None: a report not heard on air now (the radio's node DB gives its own `heard`)
    user: NodeUser | None = None
    position: Position | None = None
    device: DeviceMetrics | None = None
    environment: EnvironmentMetrics | None = None
    neighbors: tuple[Neighbor, ...] | None = None
    is_self: bool = False  # the bot's own node


@dataclass(frozen=True)
class NodeRecord:
    """Everything the directory holds about one node: the newest of each kind of report."""

    node: int
    user: NodeUser | None = None
    heard: Heard | None = None  # the last packet heard from it
    position: Position | None = None
    device: DeviceMetrics | None = None
    environment: EnvironmentMetrics | None = None
    neighbors: tuple[Neighbor, ...] = ()
    is_self: bool = False

    @property
    def last_heard(self) -> float:
        """Epoch seconds of the last packet heard (0: never)."""
        return self.heard.at if self.heard is not None else 0.0

    @property
    def short_name(self) -> str:
        """The short name, else the node's `!id`."""
        return (self.user.short_name if self.user else "") or node_label(self.node)

    def merge(self, report: NodeReport) -> NodeRecord:
        """This record with `report`'s facts; older facts never replace newer ones."""
        heard = self.heard
        if report.heard is not None and (heard is None or report.heard.at >= heard.at):
            # A packet without signal figures (say, relayed over MQTT) keeps the last known ones.
            heard = _keep_known(report.heard, heard)
        return NodeRecord(
            node=self.node,
            user=report.user or self.user,
            heard=heard,
            position=_newer(report.position, self.position),
            device=_merged_device(report.device, self.device),
            environment=_newer(report.environment, self.environment),
            neighbors=report.neighbors if report.neighbors is not None else self.neighbors,
            is_self=self.is_self or report.is_self,
        )


def _keep_known(new: Heard, old: Heard | None) -> Heard:
    if old is None or new.snr is not None or new.hops is not None:
        return new
    return dataclasses.replace(new, snr=old.snr, rssi=old.rssi, hops=old.hops)


def _newer(new: _T | None, old: _T | None) -> _T | None:
    if new is None:
        return old
    if old is None or new.at >= old.at:
        return new
    return old


def _merged_device(new: DeviceMetrics | None, old: DeviceMetrics | None) -> DeviceMetrics | None:
    """Field by field: a report with only some figures keeps the others it had."""
    if new is None or old is None:
        return new or old
    if new.at < old.at:
        return old
    fields = {f.name: getattr(new, f.name) for f in dataclasses.fields(new)}
    for name, value in fields.items():
        if value is None:
            fields[name] = getattr(old, name)
    return DeviceMetrics(**fields)


def node_label(node: int) -> str:
    """The firmware's `!xxxxxxxx` id of a node number."""
    return f"!{node & 0xFFFFFFFF:08x}"


def distance_m(a: Position, b: Position) -> float:
    """Great-circle distance in metres."""
    return geo.distance_m(a.lat, a.lon, b.lat, b.lon)


def bearing_deg(a: Position, b: Position) -> float:
    """Initial bearing from `a` to `b`, degrees clockwise from north."""
    return geo.bearing_deg(a.lat, a.lon, b.lat, b.lon)


def distance_text(a: Position, b: Position) -> str:
    """A distance said no finer than the two positions allow: "350 m", "12 km", "~20 km (±6 km)"."""
    meters = distance_m(a, b)
    slack = a.uncertainty_m + b.uncertainty_m
    if slack > 0 and slack >= meters / 10:
        return f"~{_length(meters)} (±{_length(slack)})"
    return _length(meters)


def _length(meters: float) -> str:
    if meters < 1000:
        return f"{int(round(meters, -1)) if meters >= 100 else int(round(meters))} m"
    km = meters / 1000
    return f"{km:.1f} km" if km < 10 else f"{round(km)} km"


def ago_text(seconds: float) -> str:
    """A short age: "now", "4m", "2h", "3d"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return "now"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def heard_within(records: Iterable[NodeRecord], now: float, seconds: float) -> int:
    """How many nodes (not the bot's own) were heard in the last `seconds`."""
    return sum(1 for r in records if not r.is_self and r.heard is not None and now - r.heard.at <= seconds)


def battery_text(device: DeviceMetrics | None) -> str | None:
    """ "87%", "on power", or None when the node reported no battery level."""
    if device is None or device.battery_level is None:
        return None
    if device.battery_level >= BATTERY_POWERED:
        return "on power"
    voltage = f" {device.voltage:.2f}V" if device.voltage else ""
    return f"{device.battery_level}%{voltage}"


def hops_text(heard: Heard | None) -> str:
    """ "direct", "2 hops", "mqtt" or "hops ?"."""
    if heard is None or heard.hops is None:
        return "via mqtt" if heard is not None and heard.via_mqtt else "hops ?"
    return "direct" if heard.hops == 0 else f"{heard.hops} hop{'s' if heard.hops != 1 else ''}"


def find(records: Sequence[NodeRecord], name: str) -> NodeRecord | None:
    """A node by `!id`, short name or long name (case-insensitive); the most recently heard when several match."""
    wanted = name.strip().casefold()
    if not wanted:
        return None
    if wanted.startswith("!") and len(wanted) == 9:
        try:
            num = int(wanted[1:], 16)
        except ValueError:
            num = -1
        for record in records:
            if record.node == num:
                return record
    matches = [
        r
        for r in records
        if r.user and wanted in (r.user.short_name.strip().casefold(), r.user.long_name.strip().casefold())
    ]
    if not matches:
        return None
    return max(matches, key=lambda r: r.last_heard)


def _bare(word: str) -> str:
    """A word without punctuation or a possessive: "BRVO's?" -> "brvo"."""
    word = word.strip(".,;:?!'\"()").casefold()
    for suffix in ("'s", "’s"):
        word = word.removesuffix(suffix)
    return word


def bare_words(text: str) -> set[str]:
    """The words of a text, bare and folded (the way names are matched)."""
    words = {_bare(w) for w in text.split()}
    words.discard("")
    return words


def parse_label(word: str) -> int | None:
    """The node number of a `!xxxxxxxx` id, else None."""
    if len(word) != 9 or not word.startswith("!"):
        return None
    try:
        return int(word[1:], 16)
    except ValueError:
        return None


def mentioned(records: Sequence[NodeRecord], text: str) -> list[NodeRecord]:
    """The known nodes a question names (by short name, long name or `!id`, as whole words)."""
    words = {_bare(w) for w in text.split()}
    words.discard("")
    folded = text.casefold()
    found = []
    for record in records:
        user = record.user
        short = user.short_name.strip().casefold() if user else ""
        long = user.long_name.strip().casefold() if user else ""
        if node_label(record.node) in words or (short and short in words) or (len(long) >= 4 and long in folded):
            found.append(record)
    return found
