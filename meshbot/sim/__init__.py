"""A virtual Meshtastic node that the real `meshtastic` TCPInterface connects to, for tests and demos.

`VirtualNode` speaks the stream API to one TCP client; an `Air` carries what it transmits.
`LoopbackAir` is the single-node air: every destination answers, neighbours rebroadcast.
"""

from meshbot.sim.air import Air, AirNode, LoopbackAir
from meshbot.sim.node import VirtualNode
from meshbot.sim.records import ACK, PENDING, SentPacket
from meshbot.sim.render import format_handset_line, format_sent

__all__ = [
    "ACK",
    "Air",
    "AirNode",
    "LoopbackAir",
    "PENDING",
    "SentPacket",
    "VirtualNode",
    "format_handset_line",
    "format_sent",
]
