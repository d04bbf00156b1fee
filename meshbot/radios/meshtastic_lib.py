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
from meshtastic.protobuf import config_pb2
from pubsub import pub

from meshbot.core import limits
from meshbot.core.acks import AckRouter
from meshbot.core.config import Config, RadioConfig
from meshbot.core.domain import AckStatus, Inbound, LocalNode, Outbound, RadioEvent, RadioUnavailable, SendResult
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id

log = logging.getLogger(__name__)

TOPIC_TEXT = "meshtastic.receive.text"
# Unknown ports publish under meshtastic.receive.data.<PORT>; known non-text ports
# (position, telemetry, ...) have their own topics that a text bot never needs.
TOPIC_DATA = "meshtastic.receive.data"
TOPIC_UP = "meshtastic.connection.established"
TOPIC_LOST = "meshtastic.connection.lost"
# ACKs and NAKs (ROUTING_APP packets) of every interface, old and new.
TOPIC_ROUTING = "meshtastic.receive.routing"
# Forget a send's ACK callback after this long (the library would keep it forever).
HANDLER_TTL_S = 600.0


class MalformedPacket(ValueError):
    """A packet dict missing what every packet must have."""


# mesh.proto: node numbers and packet ids are fixed32; a packet names one of 8 channel slots.
_UINT32_MAX = 0xFFFFFFFF
_MAX_CHANNEL_INDEX = 7


def _int(value: Any, name: str, top: int = _UINT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedPacket(f"{name} is {type(value).__name__}, not an int")
    if not 0 <= value <= top:
        raise MalformedPacket(f"{name} {value} is out of range 0..{top}")
    return value


def _text(value: Any) -> str | None:
    # The library decodes UTF-8 bytes, so a real packet never carries a lone surrogate;
    # a str that cannot be encoded back is treated like undecodable text.
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def parse_packet(packet: Mapping[str, Any], my_node_num: int) -> Inbound:
    """Turn the library's packet dict into an `Inbound`; raise MalformedPacket when it cannot."""
    if "from" not in packet or "id" not in packet:
        raise MalformedPacket("no 'from' or 'id'")
    sender, packet_id = _int(packet["from"], "from"), _int(packet["id"], "id")
    to = _int(packet.get("to", 0), "to")
    decoded = packet.get("decoded")
    if not isinstance(decoded, Mapping):
        decoded = {}
    payload = decoded.get("payload", b"")
    text = decoded.get("text")
    reply_id = decoded.get("replyId")
    return Inbound(
        sender=sender,
        to=to,
        packet_id=packet_id,
        portnum=str(decoded.get("portnum", "UNKNOWN_APP")),
        # The library leaves `text` unset when the payload is not valid UTF-8.
        text=_text(text),
        payload_len=len(payload) if isinstance(payload, (bytes, bytearray, str)) else 0,
        channel=_int(packet.get("channel", 0), "channel", _MAX_CHANNEL_INDEX),
        is_dm=to == my_node_num,
        emoji=bool(decoded.get("emoji")),
        reply_id=reply_id if isinstance(reply_id, int) and 0 <= reply_id <= _UINT32_MAX else None,
        hop_start=_opt_int(packet.get("hopStart")),
        hop_limit=_opt_int(packet.get("hopLimit")),
        snr=_opt_float(packet.get("rxSnr")),
        rssi=_opt_int(packet.get("rxRssi")),
        rx_time=_opt_float(packet.get("rxTime")),
        via_mqtt=bool(packet.get("viaMqtt")),
        pki=bool(packet.get("pkiEncrypted")),
    )


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def result_of(packet: Mapping[str, Any], request_id: int, my_node_num: int) -> SendResult:
    """Read an ACK/NAK routing packet for `request_id`."""
    decoded = packet.get("decoded") or {}
    routing = decoded.get("routing") or {}
    reason = str(routing.get("errorReason", "NONE"))
    if reason != "NONE":
        return SendResult(request_id, AckStatus.NAKED, reason)
    # An ACK from our own node only says a rebroadcast was overheard.
    implicit = packet.get("from") == my_node_num
    return SendResult(request_id, AckStatus.IMPLICIT if implicit else AckStatus.ACKED)


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

    def describe(self) -> str:
        """Where the radio is, for log lines."""
        if self._cfg.host:
            host, port = split_host(self._cfg.host)
            return f"tcp {host}:{port}"
        if self._cfg.ble:
            return f"ble {self._cfg.ble}"
        return f"serial {self._cfg.port or '(auto)'}"

    def start(self, on_packet: Callable[[Inbound], None], on_event: Callable[[RadioEvent], None]) -> None:
        """Subscribe, then connect, retrying with backoff until it works or close() is called."""
        self._on_packet, self._on_event = on_packet, on_event
        # pypubsub keeps weak references: these bound methods live as long as this object.
        pub.subscribe(self._on_text, TOPIC_TEXT)
        pub.subscribe(self._on_data, TOPIC_DATA)
        pub.subscribe(self._on_routing, TOPIC_ROUTING)
        pub.subscribe(self._on_lost, TOPIC_LOST)
        self._reconnect_until_up()

    def _connect(self) -> None:
        kind, where = self.describe().split(" ", 1)
        log.info("connecting to %s", self.describe(), extra={"event": Event.RADIO_CONNECTING})
        timeout = int(self._cfg.connect_timeout_s)
        if kind == "tcp":
            host, port = split_host(self._cfg.host or "")
            iface = meshtastic.tcp_interface.TCPInterface(
                hostname=host, portNumber=port, noNodes=self._cfg.no_nodes, timeout=timeout
            )
        elif kind == "ble":
            from meshtastic import ble_interface  # bleak is heavy; load it only for BLE

            iface = ble_interface.BLEInterface(address=where, noNodes=self._cfg.no_nodes, timeout=timeout)
        else:
            iface = meshtastic.serial_interface.SerialInterface(
                devPath=self._serial_path(), noNodes=self._cfg.no_nodes, timeout=timeout
            )
        with self._lock:
            self._iface = iface
            self._ifaces.add(iface)
            self._node = self._read_local_node(iface)
        self._up.set()
        node = self._node
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
        if interface is not self._iface or self._on_packet is None or self._node is None:
            return
        try:
            msg = parse_packet(packet, self._node.node_num)
        except MalformedPacket as exc:
            log.warning("ignored malformed packet: %s", exc, extra={"event": Event.IGNORED, "reason": Reason.MALFORMED})
            return
        self._on_packet(msg)

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
            if not self._up.is_set():
                return
            self._up.clear()
        log.error("radio down (%s): reconnecting", why, extra={"event": Event.RADIO_DOWN, "reason": why})
        if self._on_event is not None:
            self._on_event(RadioEvent.LOST)
        self._supervisor = threading.Thread(target=self._reconnect_until_up, name="meshbot-radio", daemon=True)
        self._supervisor.start()

    def _reconnect_until_up(self) -> None:
        delay, cap = self._backoff
        attempt = 0
        while not self._closing.is_set():
            attempt += 1
            self._close_iface()
            try:
                self._connect()
            except Exception as exc:  # any failure to connect: wait and try again, forever
                log.warning(
                    "connect attempt %d to %s failed: %s; next in %.0fs",
                    attempt,
                    self.describe(),
                    exc,
                    delay,
                    extra={"event": Event.RADIO_RETRY, "attempt": attempt},
                )
                self._closing.wait(delay)
                delay = min(delay * 2, cap)
                continue
            if self._on_event is not None:
                self._on_event(RadioEvent.CONNECTED)
            return

    def wait_up(self, timeout: float) -> bool:
        """Block until the link is up; True when it is."""
        return self._up.wait(timeout)

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
            sent = iface.sendText(
                message.text,
                destinationId=int(message.dest),
                wantAck=message.want_ack,
                channelIndex=message.channel,
                replyId=message.reply_id,
                hopLimit=self._hop_limit,
            )
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

    # -- shutdown ------------------------------------------------------------------------------------------
    def _close_iface(self) -> None:
        with self._lock:
            iface, self._iface = self._iface, None
        if iface is not None:
            try:
                iface.close()
            except Exception as exc:  # a half-dead link may fail to close; it is gone either way
                log.debug("closing old interface: %s", exc)

    def close(self) -> None:
        """Unsubscribe, stop reconnecting and close the link."""
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
        log.info("radio closed", extra={"event": Event.RADIO_CLOSED})


def from_config(cfg: Config, store: object, clock: object) -> MeshtasticRadio:
    """The registry's factory: a radio on the node that `[radio]` names."""
    return MeshtasticRadio(cfg.radio, cfg.mesh.hop_limit)
