"""A virtual mesh's topology: a small TOML file validated by frozen pydantic models.

```toml
[mesh]
seed = 1                  # drives loss and contention
time_scale = 1.0          # simulated seconds per real second
modem_preset = "SHORT_FAST"
region = "US"             # sets the duty-cycle share
hop_limit = 3
channels = ["", "Ops"]    # optional: index 0 is the primary channel
modules = true            # optional: Position, Telemetry, NeighborInfo broadcasts
modules_speedup = 30.0    # optional: the firmware's intervals divided by this

[[nodes]]
name = "Alice"            # unique; used by --handset and in neighbours
id = "!0a11ce00"          # or num = 0x0a11ce00
long_name = "Alice Handheld"
short_name = "ALI"
role = "handset"          # "bot" (exactly one), "handset" or "relay"
port = 0                  # TCP port on 127.0.0.1; 0 picks a free one
position = [52.370, 4.890]
neighbours = ["Relay"]    # who hears whom (links are symmetric)

[[links]]                 # optional, per neighbour pair
a = "Alice"
b = "Relay"
loss = 0.1                # probability a frame is lost, each direction
snr = 4.5                 # else derived from the positions
rssi = -95
```
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from meshtastic.protobuf import config_pb2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from meshbot.core import limits
from meshbot.sim.rules.channel import DEFAULT_RSSI_DBM, DEFAULT_SNR_DB, Link, distance_km, link_from_distance
from meshbot.sim.rules.handshake import MAX_NUM_CHANNELS

SHORT_NAME_MAX = 4  # what the apps let a person type
BUNDLED_PACKAGE = "meshbot.sim.topologies"  # where the named topologies ship (package data)
DEFAULT_TOPOLOGY = "demo"
Role = Literal["bot", "handset", "relay"]


class TopologyError(ValueError):
    """A topology file that cannot be used; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSpec(_Strict):
    """The MQTT broker that gateway nodes uplink to and downlink from (firmware module config mqtt)."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    root: str = "msh/US"
    channel: str = "LongFast"  # the primary channel's name, as in the topic and the channel hash
    psk: str = "AQ=="


class GatewaySpec(_Strict):
    """A node that is an MQTT gateway: channel settings uplink_enabled / downlink_enabled."""

    uplink: bool = True
    downlink: bool = True


class MeshSection(_Strict):
    """Settings every node of the mesh shares."""

    seed: int = 0
    time_scale: float = Field(default=1.0, gt=0)
    modem_preset: str = "LONG_FAST"
    region: str = "US"
    hop_limit: int = Field(default=limits.DEFAULT_HOP_LIMIT, ge=1, le=limits.MAX_HOP_LIMIT)
    channels: tuple[str, ...] = Field(default=("",), min_length=1, max_length=MAX_NUM_CHANNELS)
    mqtt: BrokerSpec | None = None  # needed when a node is a gateway
    # Nodes send Position, device Telemetry and NeighborInfo at the firmware's intervals (15 min, 30 min, 6 h)
    # divided by `modules_speedup`, the first soon after the NodeInfo announcements. false: NodeInfo only.
    modules: bool = False
    modules_speedup: float = Field(default=1.0, gt=0)

    @field_validator("modem_preset", "region", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("modem_preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in config_pb2.Config.LoRaConfig.ModemPreset.keys():  # noqa: SIM118 (a protobuf enum wrapper, not a dict)
            raise ValueError(f"unknown modem preset {value!r}")
        return value

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value not in config_pb2.Config.LoRaConfig.RegionCode.keys() or value == "UNSET":  # noqa: SIM118
            raise ValueError(f"unknown region {value!r}")
        return value


class NodeSpec(_Strict):
    """One node: who it is, where it listens, whom it hears."""

    name: str = Field(min_length=1)
    num: int | None = Field(default=None, gt=0, lt=limits.BROADCAST_NUM)
    id: str | None = Field(default=None, pattern=r"^![0-9a-fA-F]{8}$")
    long_name: str = ""
    short_name: str = Field(default="", max_length=SHORT_NAME_MAX)
    role: Role
    port: int = Field(default=0, ge=0, le=65535)
    position: tuple[float, float] | None = None
    neighbours: tuple[str, ...] = ()
    mqtt: GatewaySpec | None = None  # an MQTT gateway node
    ignore_mqtt: bool = False  # lora.ignore_mqtt: drop packets that came through a broker
    ok_to_mqtt: bool = False  # lora.config_ok_to_mqtt: let gateways uplink this node's packets

    @model_validator(mode="after")
    def _one_number(self) -> NodeSpec:
        if (self.num is None) == (self.id is None):
            raise ValueError("give exactly one of num or id")
        if self.id is not None and int(self.id[1:], 16) in (0, limits.BROADCAST_NUM):
            raise ValueError(f"id {self.id} is not a usable node number")
        if self.position is not None:
            lat, lon = self.position
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"position {self.position} is not (lat, lon)")
        return self

    @property
    def node_num(self) -> int:
        """The node number, from `num` or `id`."""
        return self.num if self.num is not None else int(str(self.id)[1:], 16)

    @property
    def display_long_name(self) -> str:
        """The long name, defaulting to the node's name."""
        return self.long_name or self.name

    @property
    def display_short_name(self) -> str:
        """The short name, defaulting to the first letters of the name."""
        return self.short_name or self.name[:SHORT_NAME_MAX].upper()


class LinkSpec(_Strict):
    """Quality of the link between two neighbours (both directions)."""

    a: str
    b: str
    loss: float = Field(default=0.0, ge=0.0, le=1.0)
    snr: float | None = Field(default=None, ge=-30.0, le=30.0)
    rssi: int | None = Field(default=None, ge=-150, le=0)


class Topology(_Strict):
    """A whole mesh."""

    mesh: MeshSection = MeshSection()
    nodes: tuple[NodeSpec, ...] = Field(min_length=1)
    links: tuple[LinkSpec, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        names = [n.name for n in self.nodes]
        _no_duplicates("name", names)
        _no_duplicates("node number", [f"!{n.node_num:08x}" for n in self.nodes])
        _no_duplicates("port", [str(n.port) for n in self.nodes if n.port])
        bots = [n.name for n in self.nodes if n.role == "bot"]
        gateways = [n.name for n in self.nodes if n.mqtt is not None]
        if gateways and self.mesh.mqtt is None:
            raise ValueError(f"gateway {gateways[0]!r} needs a [mesh.mqtt] broker")
        if len(bots) != 1 and not (gateways and not bots):
            raise ValueError(
                f"exactly one node must have role 'bot', or none when the bot joins through a gateway "
                f"(found {len(bots)})"
            )
        known = set(names)
        for node in self.nodes:
            for other in node.neighbours:
                if other not in known:
                    raise ValueError(f"node {node.name!r}: neighbour {other!r} is not a node")
                if other == node.name:
                    raise ValueError(f"node {node.name!r} lists itself as a neighbour")
        pairs = self.neighbour_pairs()
        for link in self.links:
            if frozenset((link.a, link.b)) not in pairs:
                raise ValueError(f"link {link.a!r}-{link.b!r} joins nodes that are not neighbours")
        return self

    def neighbour_pairs(self) -> set[frozenset[str]]:
        """Every pair of nodes that hear each other (listing either way is enough)."""
        return {frozenset((n.name, other)) for n in self.nodes for other in n.neighbours}

    def node(self, name: str) -> NodeSpec:
        """The node called `name` (KeyError if none)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def bot(self) -> NodeSpec:
        """The bot's radio (KeyError when the bot has none and joins through an MQTT gateway)."""
        for node in self.nodes:
            if node.role == "bot":
                return node
        raise KeyError("bot")

    def link_table(self) -> dict[int, dict[int, Link]]:
        """For each node number, the nodes that hear it and how: explicit link, else positions, else defaults."""
        by_name = {n.name: n for n in self.nodes}
        explicit = {frozenset((link.a, link.b)): link for link in self.links}
        table: dict[int, dict[int, Link]] = {n.node_num: {} for n in self.nodes}
        for pair in sorted(self.neighbour_pairs(), key=sorted):
            a, b = (by_name[name] for name in sorted(pair))
            link = _link_between(a, b, explicit.get(pair))
            table[a.node_num][b.node_num] = link
            table[b.node_num][a.node_num] = link
        # Keep each neighbour list in topology order, so runs with the same seed draw alike.
        order = {n.node_num: i for i, n in enumerate(self.nodes)}
        return {num: dict(sorted(links.items(), key=lambda kv: order[kv[0]])) for num, links in table.items()}


def _link_between(a: NodeSpec, b: NodeSpec, spec: LinkSpec | None) -> Link:
    loss = spec.loss if spec else 0.0
    if a.position is not None and b.position is not None:
        derived = link_from_distance(distance_km(a.position, b.position), loss)
    else:
        derived = Link(loss=loss, snr=DEFAULT_SNR_DB, rssi=DEFAULT_RSSI_DBM)
    snr = spec.snr if spec and spec.snr is not None else derived.snr
    rssi = spec.rssi if spec and spec.rssi is not None else derived.rssi
    return Link(loss=loss, snr=snr, rssi=rssi)


def _no_duplicates(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value} is used twice")
        seen.add(value)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        message = e["msg"].removeprefix("Value error, ")
        parts.append(f"{key}: {message}" if key else message)
    return "; ".join(parts)


def parse_topology(data: dict[str, Any], *, source: str = "topology") -> Topology:
    """Validate already-parsed TOML data; raise TopologyError naming the bad key."""
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(f"{source}: {_describe(exc)}") from exc


def bundled_topologies() -> list[str]:
    """The names of the topologies shipped inside the package ("city", "demo", ...)."""
    files = resources.files(BUNDLED_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def _looks_like_a_path(source: str) -> bool:
    return "/" in source or "\\" in source or source.endswith(".toml")


def read_topology_text(source: Path | str) -> tuple[str, str]:
    """The TOML text of a topology and a label for messages: a bundled name (str) or a file path."""
    if isinstance(source, str) and not _looks_like_a_path(source):
        names = bundled_topologies()
        if source not in names:
            raise TopologyError(
                f"no topology named {source!r}: give one of {', '.join(names)} or the path of a .toml file"
            )
        text = resources.files(BUNDLED_PACKAGE).joinpath(f"{source}.toml").read_text(encoding="utf-8")
        return text, f"topology {source!r}"
    path = Path(source).expanduser()
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError as exc:
        raise TopologyError(f"{path}: file not found") from exc
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TopologyError(f"{path}: not a text file") from exc


def load_topology(source: Path | str, *, seed: int | None = None, time_scale: float | None = None) -> Topology:
    """Read and validate a topology (bundled name or file); `seed` and `time_scale` override its [mesh] values."""
    text, label = read_topology_text(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{label}: not valid TOML: {exc}") from exc
    mesh = dict(data.get("mesh") or {}) if isinstance(data.get("mesh", {}), dict) else data.get("mesh")
    if isinstance(mesh, dict):
        if seed is not None:
            mesh["seed"] = seed
        if time_scale is not None:
            mesh["time_scale"] = time_scale
        data = {**data, "mesh": mesh}
    return parse_topology(data, source=label)
