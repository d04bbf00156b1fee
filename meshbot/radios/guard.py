"""One INFO line, not a traceback, for a packet whose payload the `meshtastic` library cannot decode.

The library decodes Position, User (NodeInfo), Telemetry and other payloads on its reader thread. A corrupt
one raises protobuf's DecodeError there, and its reader answers with an ERROR line and a traceback printed
straight to stderr, past any logging config: three tracebacks a minute from one broken tracker bury a log.
The guard wraps the interface's frame handler: a DecodeError becomes one INFO line (event `ignored`, reason
`malformed`) naming the sender and port; the packet is dropped exactly as the library drops it. Every other
error still reaches the library's own handling, and its logging is left as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id
from meshbot.radios.protobufs import mesh_pb2, portnums_pb2

log = logging.getLogger(__name__)


def guard_decoding(iface: Any) -> None:
    """Make `iface` log an undecodable packet in one line instead of a traceback."""
    handle: Callable[[bytes], None] | None = getattr(iface, "_handleFromRadio", None)
    if handle is None:  # a library without it: nothing to guard, its own handling stays
        return

    def guarded(frame: bytes) -> None:
        try:
            handle(frame)
        except DecodeError as exc:
            log.info("ignored %s: malformed (%s)", describe_frame(frame), exc, extra=_extra(frame))

    iface._handleFromRadio = guarded


def describe_frame(frame: bytes) -> str:
    """'Telemetry from !0a11ce00 (id 1234)' for a FromRadio frame, as far as it can be read."""
    message = mesh_pb2.FromRadio()
    try:
        message.ParseFromString(frame)
    except DecodeError:
        return f"a {len(frame)}-byte frame from the node"
    if not message.HasField("packet"):
        return f"a {message.WhichOneof('payload_variant') or 'empty'} message from the node"
    packet = message.packet
    return f"{_port(packet.decoded.portnum)} from {node_id(getattr(packet, 'from'))} (id {packet.id})"


def _port(portnum: int) -> str:
    try:
        return str(portnums_pb2.PortNum.Name(portnum))
    except ValueError:
        return f"port {portnum}"


def _extra(frame: bytes) -> dict[str, Any]:
    return {"event": Event.IGNORED, "reason": Reason.MALFORMED, "frame_bytes": len(frame)}
