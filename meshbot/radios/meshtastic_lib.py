"""The radio boundary: the only module that imports `meshtastic` or `pubsub`.

It connects the way the `meshtastic` CLI does (serial, TCP or BLE), turns library packets into
immutable `Inbound` messages, and sends texts by integer node number with ACK reporting. Here: building
the library's interfaces, pubsub subscriptions, sending and closing. `MeshtasticRadio`'s mixins hold the
rest, without importing the library: `link` (connect, reconnect), `listeners` (what the library publishes)
and `nodedb` (the node's config and node DB).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import meshtastic.mesh_interface
import meshtastic.serial_interface
import meshtastic.tcp_interface
import meshtastic.util
from meshtastic.protobuf import mesh_pb2, portnums_pb2
from pubsub import pub

from meshbot.core.acks import AckRouter
from meshbot.core.config import Config, RadioConfig
from meshbot.core.directory import NodeReport
from meshbot.core.domain import Inbound, LocalNode, Outbound, RadioEvent, RadioUnavailable, SendResult
from meshbot.core.events import Event
from meshbot.radios.attempt import CLOSE_WAIT_S, close_quietly
from meshbot.radios.guard import guard_decoding
from meshbot.radios.link import LinkSupervisor, split_host
from meshbot.radios.listeners import LibraryListeners
from meshbot.radios.nodedb import LibraryNodeDb

log = logging.getLogger(__name__)

TOPIC_TEXT = "meshtastic.receive.text"
# Unknown ports publish under meshtastic.receive.data.<PORT>; known non-text ports
# (position, telemetry, ...) have their own topics that a text bot never needs.
TOPIC_DATA = "meshtastic.receive.data"
TOPIC_LOST = "meshtastic.connection.lost"
# ACKs and NAKs (ROUTING_APP packets) of every interface, old and new.
TOPIC_ROUTING = "meshtastic.receive.routing"
# Every packet the library decodes, once (each is published on exactly one subtopic): the node directory's feed.
TOPIC_HEARD = "meshtastic.receive"
# A node-DB entry the radio sent (at connect, and after our node-list request).
TOPIC_NODE_DB = "meshtastic.node.updated"
# Forget a send's ACK callback after this long (the library would keep it forever).
HANDLER_TTL_S = 600.0


def detect_serial_ports() -> list[str]:
    """Serial devices that look like Meshtastic radios."""
    return list(meshtastic.util.findPorts(True))


class MeshtasticRadio(LinkSupervisor, LibraryListeners, LibraryNodeDb):
    """A `Radio` over the meshtastic library, with a supervisor that rebuilds a lost link."""

    def __init__(
        self, cfg: RadioConfig, hop_limit: int | None = None, backoff_s: tuple[float, float] = (1.0, 60.0)
    ) -> None:
        self._cfg = cfg
        self._hop_limit = hop_limit
        self._backoff = backoff_s
        self._iface: Any = None
        self._node: LocalNode | None = None
        self._on_packet: Callable[[Inbound], None] | None = None
        self._on_event: Callable[[RadioEvent], None] | None = None
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._closing = threading.Event()
        self._supervisor: threading.Thread | None = None
        # ACKs are matched here, not in the library's per-interface handler table: an ACK the
        # node held while the link was down arrives on the *new* interface after a reconnect.
        self._acks = AckRouter(HANDLER_TTL_S)
        self._ifaces: weakref.WeakSet[Any] = weakref.WeakSet()  # every interface we built
        # The interface still in its config handshake, and the packets it delivered meanwhile: the node
        # flushes what it held for us as soon as its config is sent, before our connect call returns.
        self._building: Any = None
        self._early: list[Mapping[str, Any]] = []
        self._node_sink: Callable[[NodeReport], None] | None = None

    def start(self, on_packet: Callable[[Inbound], None], on_event: Callable[[RadioEvent], None]) -> None:
        """Subscribe, then connect, retrying with backoff until it works.

        close() from another thread ends this promptly with RadioUnavailable, even mid-attempt.
        """
        self._on_packet, self._on_event = on_packet, on_event
        # pypubsub keeps weak references: these bound methods live as long as this object.
        pub.subscribe(self._on_text, TOPIC_TEXT)
        pub.subscribe(self._on_data, TOPIC_DATA)
        pub.subscribe(self._on_routing, TOPIC_ROUTING)
        pub.subscribe(self._on_lost, TOPIC_LOST)
        if self._node_sink is not None:
            pub.subscribe(self._on_heard, TOPIC_HEARD)
            pub.subscribe(self._on_node_db, TOPIC_NODE_DB)
        if not self._reconnect_until_up():
            raise RadioUnavailable(f"radio closed while connecting to {self.describe()}")

    def _build(self, made: Callable[[Any], None]) -> Any:
        """Build and connect the library's interface (runs on a ConnectAttempt's thread)."""
        kind, where = self.describe().split(" ", 1)
        timeout = int(self._cfg.connect_timeout_s)
        if kind == "ble":
            from meshtastic import ble_interface  # bleak is heavy; load it only for BLE

            ble = ble_interface.BLEInterface(address=where, noNodes=self._cfg.no_nodes, timeout=timeout)
            guard_decoding(ble)
            return ble
        iface: Any
        if kind == "tcp":
            host, port = split_host(self._cfg.host or "")
            iface = meshtastic.tcp_interface.TCPInterface(
                hostname=host, portNumber=port, noNodes=self._cfg.no_nodes, timeout=timeout, connectNow=False
            )
        else:
            iface = meshtastic.serial_interface.SerialInterface(
                devPath=self._serial_path(), noNodes=self._cfg.no_nodes, timeout=timeout, connectNow=False
            )
        made(iface)  # from here a close() can reach the half-built link
        guard_decoding(iface)  # before it reads: a corrupt payload in the config download is one line too
        self._hold_early(iface)
        try:
            # What the constructors do with connectNow=True, split so the object exists before it blocks.
            iface.connect()
            iface.waitForConfig()
        except BaseException:
            close_quietly(iface)
            raise
        return iface

    def _serial_path(self) -> str:
        # The library's own auto-detect prints and returns a dead object when it finds no
        # port, and calls sys.exit() when it finds several: detect here instead.
        if self._cfg.port:
            return self._cfg.port
        ports = detect_serial_ports()
        if len(ports) != 1:
            raise RadioUnavailable(
                f"found {len(ports)} serial radios ({', '.join(ports) or 'none'}); " "name one with --port"
            )
        return ports[0]

    # -- sending -----------------------------------------------------------------------------------------
    def send(self, message: Outbound, on_result: Callable[[SendResult], None]) -> int:
        """Send a text by integer node number; `on_result` receives its ACK or NAK."""
        iface, node = self._iface, self._node
        if iface is None or node is None or not self._up.is_set():
            raise RadioUnavailable("radio is not connected")
        if not iface.isConnected.is_set():
            # The link died but "connection lost" is still queued on the library's publishing
            # thread; sending now would block ~30 s inside the library. Rebuild at once.
            self._link_down("link not connected")
            raise RadioUnavailable("radio link is down")

        try:
            sent = self._write(iface, message)
        except OSError as exc:
            self._link_down(f"send failed: {exc}")
            raise RadioUnavailable(str(exc)) from exc
        except meshtastic.mesh_interface.MeshInterface.MeshInterfaceError as exc:
            if iface.isConnected.is_set():
                raise  # a refusal such as "Data payload too big", not a dead link
            self._link_down(f"send failed: {exc}")
            raise RadioUnavailable(str(exc)) from exc
        if message.want_ack:
            self._acks.expect(int(sent.id), on_result)
        return int(sent.id)

    def _write(self, iface: Any, message: Outbound) -> Any:
        """Hand the text to the library; a copy of an earlier send goes under that send's packet id."""
        if message.packet_id is None or not hasattr(iface, "_sendPacket"):
            return iface.sendText(
                message.text,
                destinationId=int(message.dest),
                wantAck=message.want_ack,
                channelIndex=message.channel,
                replyId=message.reply_id,
                hopLimit=self._hop_limit,
            )
        # sendData always draws a new id; _sendPacket is the library's documented way to send a prebuilt
        # MeshPacket, and it keeps an id that is set. The packet is built as sendData builds it.
        packet = text_packet(message)
        return iface._sendPacket(packet, int(message.dest), wantAck=message.want_ack, hopLimit=self._hop_limit)

    # -- shutdown ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop reconnecting, abort a connect in progress and close the link; any thread, returns in seconds."""
        with self._lock:
            if self._closing.is_set():
                return  # closed already (the connect watcher and the caller may both close)
            self._closing.set()
            self._up.clear()
        for listener, topic in (
            (self._on_text, TOPIC_TEXT),
            (self._on_data, TOPIC_DATA),
            (self._on_routing, TOPIC_ROUTING),
            (self._on_lost, TOPIC_LOST),
            (self._on_heard, TOPIC_HEARD),
            (self._on_node_db, TOPIC_NODE_DB),
        ):
            try:
                pub.unsubscribe(listener, topic)
            except Exception:  # never subscribed (start failed early)
                pass
        self._close_iface()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(CLOSE_WAIT_S)  # its waits all end on _closing: this is quick
        log.info("radio closed", extra={"event": Event.RADIO_CLOSED})


def text_packet(message: Outbound) -> Any:
    """The MeshPacket `sendText` would build for `message`, with `message.packet_id` as its id."""
    payload = message.text.encode("utf-8")
    if len(payload) > mesh_pb2.Constants.DATA_PAYLOAD_LEN:
        raise meshtastic.mesh_interface.MeshInterface.MeshInterfaceError("Data payload too big")
    packet = mesh_pb2.MeshPacket(id=message.packet_id or 0, channel=message.channel)
    packet.decoded.payload = payload
    packet.decoded.portnum = portnums_pb2.PortNum.TEXT_MESSAGE_APP
    if message.reply_id is not None:
        packet.decoded.reply_id = message.reply_id
    packet.priority = mesh_pb2.MeshPacket.Priority.RELIABLE
    return packet


def from_config(cfg: Config, store: object, clock: object) -> MeshtasticRadio:
    """The registry's factory: a radio on the node that `[radio]` names."""
    return MeshtasticRadio(cfg.radio, cfg.mesh.hop_limit)
