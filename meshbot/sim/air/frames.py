"""What the mesh's air keeps per frame and per node: queued frames, transmissions, radio state."""

from __future__ import annotations

from dataclasses import dataclass

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot.sim.air.air import AirNode
from meshbot.sim.air.scheduler import TimerHandle
from meshbot.sim.app.report import NodeStats
from meshbot.sim.rules import firmware as fw
from meshbot.sim.rules.channel import Link
from meshbot.sim.rules.duty import UTILISATION_WINDOW_S, AirtimeWindow, DutyCycle

# Roles that relay early and never cancel a relay on hearing a duplicate (RadioInterface, FloodingRouter).
ROUTER_ROLES = frozenset({"relay"})


@dataclass
class Frame:
    packet: mesh_pb2.MeshPacket
    frame_len: int
    airtime_s: float
    kind: str  # own | ack | nodeinfo | relay
    priority: int
    seq: int
    rx_snr: float = 0.0  # a relay's: the SNR it was heard at

    @property
    def key(self) -> tuple[int, int]:
        return getattr(self.packet, "from"), self.packet.id


@dataclass(frozen=True)
class Transmission:
    """One frame on air."""

    sender: int  # the node transmitting it
    origin: int  # the packet's `from`
    packet_id: int
    to: int
    kind: str
    start: float
    end: float
    frame_len: int
    hop_limit: int


class Radio:
    """One node's radio and router state."""

    def __init__(self, node: AirNode, links: dict[int, Link], role: str, region: str) -> None:
        self.node = node
        self.links = links  # who hears this node, and how
        self.router = role in ROUTER_ROLES
        self.queue: list[Frame] = []
        self.timer: TimerHandle | None = None
        self.on_air: Transmission | None = None
        self.history = fw.RecentKeys(fw.PACKET_HISTORY_LEN)
        self.duty = DutyCycle(region)
        self.heard = AirtimeWindow(UTILISATION_WINDOW_S)
        self.stats = NodeStats()


def kind_of(packet: mesh_pb2.MeshPacket) -> str:
    """How the report counts a node's own frame: own (from its client), ack, or nodeinfo."""
    port = packet.decoded.portnum
    if port == portnums_pb2.ROUTING_APP:
        return "ack"
    if port == portnums_pb2.NODEINFO_APP:
        return "nodeinfo"
    return "own"
