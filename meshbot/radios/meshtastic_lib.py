"""The radio boundary: the only module that imports `meshtastic` or `pubsub`.

It connects the way the `meshtastic` CLI does (serial, TCP or BLE), turns library packets into
immutable `Inbound` messages, and sends texts by integer node number with ACK reporting.
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
from meshtastic.protobuf import config_pb2, mesh_pb2, portnums_pb2
from pubsub import pub

from meshbot.core import limits
from meshbot.core.acks import AckRouter
from meshbot.core.config import Config, RadioConfig
from meshbot.core.domain import Inbound, LocalNode, Outbound, RadioEvent, RadioUnavailable, SendResult
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id
from meshbot.radios.advice import advice
from meshbot.radios.attempt import CLOSE_WAIT_S, ConnectAttempt, close_quietly
from meshbot.radios.guard import guard_decoding
from meshbot.radios.packets import MalformedPacket, parse_packet, result_of

log = logging.getLogger(__name__)

TOPIC_TEXT = "meshtastic.receive.text"
# Unknown ports publish under meshtastic.receive.data.<PORT>; known non-text ports
# (position, telemetry, ...) have their own topics that a text bot never needs.
TOPIC_DATA = "meshtastic.receive.data"
TOPIC_LOST = "meshtastic.connection.lost"
# ACKs and NAKs (ROUTING_APP packets) of every interface, old and new.
TOPIC_ROUTING = "meshtastic.receive.routing"
# Forget a send's ACK callback after this long (the library would keep it forever).
HANDLER_TTL_S = 600.0


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


def detect_serial_ports() -> list[str]:
    """Serial devices that look like Meshtastic radios."""
    return list(meshtastic.util.findPorts(True))


def split_host(host: str) -> tuple[str, int]:
    """HOST or HOST:PORT (default 4403); [v6]:PORT works too."""
    if host.startswith("["):
        addr, _, rest = host[1:].partition("]")
        return addr, int(rest.lstrip(":") or limits.DEFAULT_TCP_PORT)
    if host.count(":") == 1:
        addr, port = host.split(":")
        return addr, int(port)
    return host, limits.DEFAULT_TCP_PORT


class MeshtasticRadio:
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

    def describe(self) -> str:
        """Where the radio is, for log lines."""
        if self._cfg.host:
            host, port = split_host(self._cfg.host)
            return f"tcp {host}:{port}"
        if self._cfg.ble:
            return f"ble {self._cfg.ble}"
        return f"serial {self._cfg.port or '(auto)'}"

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

    def _connect(self) -> bool:
        """One connect attempt: True when up, False when close() won; raises why the attempt failed."""
        log.info("connecting to %s", self.describe(), extra={"event": Event.RADIO_CONNECTING})
        iface = ConnectAttempt(self._build).wait(self._closing)
        if iface is None:
            return False
        with self._lock:
            if self._closing.is_set():  # close() came while the attempt was returning
                late = iface
            else:
                late = None
                self._iface = iface
                self._ifaces.add(iface)
                self._node = node = self._read_local_node(iface)
                self._release_early(iface, node)
        if late is not None:
            close_quietly(late)
            return False
        self._up.set()
        node = self.local_node()
        log.info(
            "radio connected: %s is %s (%s), %s %s, hop limit %d",
            self.describe(),
            node_id(node.node_num),
            node.short_name or "?",
            node.region,
            node.modem_preset,
            node.hop_limit,
            extra={"event": Event.RADIO_UP, "node": node_id(node.node_num)},
        )
        for code in node.problems():
            log.warning(
                "radio %s: %s",
                node_id(node.node_num),
                advice(code),
                extra={"event": Event.RADIO_CANNOT_SEND, "reason": code},
            )
        return True

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

    def local_node(self) -> LocalNode:
        """Our node as read at the last connect."""
        if self._node is None:
            raise RadioUnavailable("not connected yet")
        return self._node

    # -- pubsub listeners: parse and hand off, nothing slow ------------------------------------
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

    def _on_routing(self, packet: Mapping[str, Any], interface: Any) -> None:
        node = self._node
        request_id = (packet.get("decoded") or {}).get("requestId")
        if interface not in self._ifaces or node is None or not isinstance(request_id, int):
            return
        self._acks.resolve(request_id, result_of(packet, request_id, node.node_num))

    def _on_lost(self, interface: Any) -> None:
        if interface is self._iface and not self._closing.is_set():
            self._link_down("connection lost")

    # -- supervision ---------------------------------------------------------------------------------
    def _link_down(self, why: str) -> None:
        with self._lock:
            if not self._up.is_set() or self._closing.is_set():
                return
            self._up.clear()
        log.error("radio down (%s): reconnecting", why, extra={"event": Event.RADIO_DOWN, "reason": why})
        if self._on_event is not None:
            self._on_event(RadioEvent.LOST)
        self._supervisor = threading.Thread(target=self._reconnect_until_up, name="meshbot-radio", daemon=True)
        self._supervisor.start()

    def _reconnect_until_up(self) -> bool:
        """Connect, retrying with backoff; True once up, False when close() ended it."""
        delay, cap = self._backoff
        attempt = 0
        while not self._closing.is_set():
            attempt += 1
            self._close_iface()
            try:
                if not self._connect():
                    break
            except Exception as exc:  # any failure to connect: wait and try again, until closed
                log.warning(
                    "connect attempt %d to %s failed: %s; next in %.0fs",
                    attempt,
                    self.describe(),
                    exc,
                    delay,
                    extra={"event": Event.RADIO_RETRY, "attempt": attempt},
                )
                self._closing.wait(delay)  # close() cuts the backoff short
                delay = min(delay * 2, cap)
                continue
            if self._on_event is not None:
                self._on_event(RadioEvent.CONNECTED)
            return True
        log.debug("stopped connecting to %s: radio closed", self.describe())
        return False

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
    def _close_iface(self) -> None:
        with self._lock:
            iface, self._iface = self._iface, None
        if iface is not None:
            close_quietly(iface)

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
