"""What the library publishes, adapted: packets to `Inbound`, node news to `NodeReport`, ACKs to their sends.

`LibraryListeners` is a mixin of `MeshtasticRadio`, whose `start` subscribes these listeners to pubsub (the
only `pubsub` import stays there). Packets an interface delivers during its config handshake wait until it is
adopted. No `meshtastic` import: the node-list request is built from `protobufs`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from meshbot.core.acks import AckRouter
from meshbot.core.config import RadioConfig
from meshbot.core.directory import NodeReport
from meshbot.core.domain import Inbound, LocalNode
from meshbot.core.events import Event, Reason
from meshbot.radios.nodefacts import report_of_library_node, report_of_library_packet
from meshbot.radios.packets import MalformedPacket, parse_packet, result_of
from meshbot.radios.protobufs import mesh_pb2

# One logger for the whole transport: operators filter its lines by this name.
log = logging.getLogger("meshbot.radios.meshtastic_lib")

# PhoneAPI.h SPECIAL_NONCE_ONLY_NODES: "send me your node DB only" (firmware 2.7+), asked after a fast connect.
NONCE_ONLY_NODES = 69421


class LibraryListeners:
    """The pubsub listeners of `MeshtasticRadio`. Expects the attributes it sets up."""

    _cfg: RadioConfig
    _iface: Any
    _node: LocalNode | None
    _on_packet: Callable[[Inbound], None] | None
    _lock: threading.Lock
    _acks: AckRouter
    _ifaces: weakref.WeakSet[Any]
    _building: Any
    _early: list[Mapping[str, Any]]
    _node_sink: Callable[[NodeReport], None] | None

    # `interface` is required, as the library always publishes it: pypubsub infers a topic's
    # argument spec from its first listener, and an optional one would break other listeners.
    def _on_text(self, packet: Mapping[str, Any], interface: Any) -> None:
        self._deliver(packet, interface)

    def _on_data(self, packet: Mapping[str, Any], interface: Any) -> None:
        self._deliver(packet, interface)

    def _deliver(self, packet: Mapping[str, Any], interface: Any) -> None:
        with self._lock:
            if interface is self._building:
                self._early.append(packet)  # handed over once the handshake is done (_release_early)
                return
            node = self._node
        if interface is self._iface and node is not None:
            self._hand_over(packet, node)

    def _hand_over(self, packet: Mapping[str, Any], node: LocalNode) -> None:
        if self._on_packet is None:
            return
        try:
            msg = parse_packet(packet, node.node_num)
        except MalformedPacket as exc:
            log.warning("ignored malformed packet: %s", exc, extra={"event": Event.IGNORED, "reason": Reason.MALFORMED})
            return
        self._on_packet(msg)

    def _hold_early(self, iface: Any) -> None:
        """Keep what `iface` delivers during its handshake (and take its ACKs) until it is adopted."""
        with self._lock:
            self._building, self._early = iface, []
            self._ifaces.add(iface)

    def _release_early(self, iface: Any, node: LocalNode) -> None:
        """Under the lock, as `iface` is adopted: hand over its early packets before any later one."""
        early, self._early = self._early, []
        if self._building is iface:
            self._building = None
        if early:
            log.debug("%d packet(s) arrived during the config handshake", len(early))
        for packet in early:
            self._hand_over(packet, node)

    # -- the node directory's feed -------------------------------------------------------------------
    def report_nodes(self, sink: Callable[[NodeReport], None]) -> None:
        """Send what the radio hears about nodes (every packet, and its node DB at connect) to `sink`."""
        self._node_sink = sink

    def _ask_node_list(self, iface: Any) -> None:
        """After a node-less connect, ask for the node DB alone: it streams in while the bot already answers."""
        if self._node_sink is None or not self._cfg.no_nodes:
            return  # no directory to fill, or the full handshake brought the node DB already
        try:
            iface._sendToRadio(mesh_pb2.ToRadio(want_config_id=NONCE_ONLY_NODES))
        except Exception as exc:  # the node list is a nicety: the link works without it
            log.warning("node list not requested: %s", exc, extra={"event": Event.DIRECTORY_ERROR})

    def _on_heard(self, packet: Mapping[str, Any], interface: Any) -> None:
        if self._node_sink is not None and interface in self._ifaces:
            my_num = getattr(getattr(interface, "myInfo", None), "my_node_num", None)
            report = report_of_library_packet(packet, my_num, time.time())
            if report is not None:
                self._node_sink(report)

    def _on_node_db(self, node: Mapping[str, Any], interface: Any) -> None:
        if self._node_sink is not None and interface in self._ifaces:
            my_num = getattr(getattr(interface, "myInfo", None), "my_node_num", None)
            report = report_of_library_node(node, my_num, time.time())
            if report is not None:
                self._node_sink(report)

    def _on_routing(self, packet: Mapping[str, Any], interface: Any) -> None:
        node = self._node
        request_id = (packet.get("decoded") or {}).get("requestId")
        if interface not in self._ifaces or node is None or not isinstance(request_id, int):
            return
        self._acks.resolve(request_id, result_of(packet, request_id, node.node_num))
