"""Virtual Meshtastic nodes and a virtual mesh that the real `meshtastic` TCPInterface connects to.

`VirtualNode` speaks the stream API to one TCP client; an `Air` carries what it transmits.
`LoopbackAir` is the single-node air: every destination answers, neighbours rebroadcast.
`VirtualMesh` puts the nodes of a topology file (`load_topology`) on a `MeshAir`: air time,
contention, loss, flooding, ACKs and duty cycle, on an injected clock.
"""

from meshbot.sim.air.air import Air, AirNode, LoopbackAir
from meshbot.sim.air.mesh import MeshAir
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.render import format_handset_line, format_sent
from meshbot.sim.app.report import MeshReport, render_report
from meshbot.sim.app.topology import Topology, TopologyError, load_topology
from meshbot.sim.node.node import VirtualNode
from meshbot.sim.node.records import ACK, PENDING, HeardPacket, SentPacket

__all__ = [
    "ACK",
    "PENDING",
    "Air",
    "AirNode",
    "HeardPacket",
    "LoopbackAir",
    "MeshAir",
    "MeshReport",
    "SentPacket",
    "Topology",
    "TopologyError",
    "VirtualMesh",
    "VirtualNode",
    "format_handset_line",
    "format_sent",
    "load_topology",
    "render_report",
]
