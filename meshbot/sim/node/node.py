"""A virtual Meshtastic node: speaks the TCP stream API to one client, and talks to an `Air`.

The real `meshtastic.tcp_interface.TCPInterface` connects to it unmodified. Behaviour follows the
firmware (PhoneAPI, MeshService, Router, ReliableRouter); see `firmware.py` for the pure rules,
`phoneapi.py` for what the node does with a client's packets and `airside.py` for what it hears and sends
on air. Here: set-up, lifecycle, what tests read and inject, and the client's TCP link.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable

from meshtastic.protobuf import mesh_pb2

from meshbot.core import airtime, limits
from meshbot.core.clock import SystemClock
from meshbot.core.domain import Clock
from meshbot.sim.air.air import Air, LoopbackAir
from meshbot.sim.air.scheduler import Scheduler
from meshbot.sim.node.airside import AirSide
from meshbot.sim.node.modules import ModulesApi
from meshbot.sim.node.phone import ClientSide, Session
from meshbot.sim.node.phoneapi import PhoneApi
from meshbot.sim.node.records import HeardPacket, ReceivedLog, SentLog, SentPacket
from meshbot.sim.node.server import ClientLink, StreamServer
from meshbot.sim.rules import firmware as fw
from meshbot.sim.rules.handshake import NONCE_ONLY_NODES, Identity, RadioSettings, config_messages, sim_public_key
from meshbot.sim.rules.inject import build_text_packet
from meshbot.sim.rules.reliable import ReliableSends

logger = logging.getLogger(__name__)


class VirtualNode(AirSide, ModulesApi, PhoneApi):
    """A Meshtastic node on 127.0.0.1 for tests and the demo. Thread-safe; start it once.

    `clock` (default: real monotonic time) stamps records and drives the 2 s text rate limit.
    Alone, the node's timers (`ack_delay_s` of the default `LoopbackAir`, `retransmit_s` between
    tries of an unanswered want_ack packet; None: the firmware's retransmission delay) run in real
    seconds. On a mesh, pass the mesh's `air` and its shared `scheduler`, which run in `clock` time.
    `channel_names` are the enabled channels (index 0 PRIMARY); a send on another index is NAKed
    NO_CHANNEL. `tx_enabled` False reports `lora.tx_enabled = false` in the config download, as a node
    set to listen only does.
    """

    def __init__(
        self,
        node_num: int,
        *,
        long_name: str = "meshbot",
        short_name: str = "BOT",
        host: str = "127.0.0.1",
        port: int = 0,
        modem_preset: str = "LONG_FAST",
        region: str = "US",
        hop_limit: int = 3,
        clock: Clock | None = None,
        ack_delay_s: float = 0.05,
        peers: Iterable[tuple[int, str, str]] = (),
        channel_names: tuple[str, ...] = ("",),
        air: Air | None = None,
        retransmit_s: float | None = None,
        wall_clock: Callable[[], float] = time.time,
        scheduler: Scheduler | None = None,
        ignore_mqtt: bool = False,
        ok_to_mqtt: bool = False,
        reject_legacy_dms: bool = False,
        tx_enabled: bool = True,
        position: tuple[float, float] | None = None,
        precision_bits: int = 32,
        battery: int | None = None,
    ) -> None:
        if node_num in (0, limits.BROADCAST_NUM) or not 0 < node_num <= 0xFFFFFFFF:
            raise ValueError(f"node_num {node_num:#x} is not a usable node number")
        self._own = Identity(node_num, long_name, short_name, sim_public_key(node_num))
        self._radio = RadioSettings(modem_preset, region, hop_limit, tuple(channel_names), tx_enabled)
        self._radio.lora()  # fail now, not at first connect, on a bad preset or region name
        self._modem = airtime.preset(modem_preset)
        now_wall = int(wall_clock())
        self._known: dict[int, Identity] = {
            num: Identity(num, long, short, sim_public_key(num), snr=6.0, last_heard=now_wall)
            for num, long, short in peers
        }
        self._clock: Clock = clock or SystemClock()
        self._wall = wall_clock
        self.position_fix, self.precision_bits = position, precision_bits  # (lat, lon) degrees, or no GPS
        self._started_at = self._clock.now()
        self._battery_start = battery if battery is not None else 60 + node_num % 40
        self._own = dataclasses.replace(self._own, position=self.own_position())
        self._owns_scheduler = scheduler is None
        self._scheduler = scheduler or Scheduler(name=f"node-{node_num:08x}-timer")
        self.air: Air = air or LoopbackAir(self._scheduler, ack_delay_s=ack_delay_s, seed=node_num)
        self._retransmit_s = retransmit_s
        # A random start at every boot, as the firmware does; loss and contention stay seeded.
        self._ids = fw.PacketIdGenerator()
        # Lock order: this lock, then ClientSide's, then a link's write lock; never the reverse.
        # The air's own lock is a leaf: it never calls a node while holding it.
        self._lock = threading.RLock()
        self._log = SentLog()
        self._received = ReceivedLog()
        self._client = ClientSide(f"node {node_num:08x}")
        self._api_session = Session(link=None)  # sends made through `send_text`, not over TCP
        self._reliable = ReliableSends(
            scheduler=self._scheduler,
            lock=self._lock,
            interval_s=self._retransmit_interval,
            transmit=self._transmit,
            finish=self._finish,
        )
        self._history = fw.RecentKeys(fw.PACKET_HISTORY_LEN)
        self.ignore_mqtt = ignore_mqtt  # lora.ignore_mqtt: packets marked via_mqtt are dropped
        self.ok_to_mqtt = ok_to_mqtt  # lora.config_ok_to_mqtt: our packets carry the OK-to-MQTT bit
        # Router.cpp perhapsDecode (firmware 2.7): a text DM to us on a channel key is dropped, not ACKed, unless
        # the owner is licensed. Off by default: a licensed owner's node (or older firmware) hands it over, so
        # the bot's own refusal can be seen.
        self.reject_legacy_dms = reject_legacy_dms
        self.on_heard: Callable[[mesh_pb2.MeshPacket], None] | None = None  # an MQTT gateway's uplink
        self._server = StreamServer(self, host=host, port=port, name=f"node-{node_num:08x}")

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and accept in a background thread; returns once listening."""
        if self._owns_scheduler:
            self._scheduler.start()
        self.air.attach(self)
        self._server.start()

    def stop(self) -> None:
        """Close the client and listener, stop timers, join threads."""
        self._server.stop()
        self.air.detach(self)
        if self._owns_scheduler:
            self._scheduler.close()
        self._reliable.cancel_all()

    def __enter__(self) -> VirtualNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def node_num(self) -> int:
        """This node's number."""
        return self._own.num

    @property
    def port(self) -> int:
        """The bound TCP port (ephemeral when constructed with 0)."""
        return self._server.port

    @property
    def client_connected(self) -> bool:
        """True while a TCP client is connected."""
        return self._server.link is not None

    @property
    def handshakes(self) -> int:
        """How many config downloads this node has completed (one per client connect or reconnect)."""
        return self._client.handshakes

    def drop_client(self, *, reset: bool = False) -> bool:
        """Close the current TCP connection (FIN, or RST with `reset`); False if none was open."""
        return self._server.drop_client(reset=reset)

    # ----- what tests read -------------------------------------------------------------------

    @property
    def sent(self) -> list[SentPacket]:
        """Snapshot of every packet the client sent through this node, oldest first."""
        return self._log.snapshot()

    def wait_for_sent(self, count: int, timeout: float) -> list[SentPacket]:
        """Wait (real time) until `count` packets are recorded with a final outcome; return a snapshot."""
        return self._log.wait_for(count, timeout)

    def wait_for_handshakes(self, count: int, timeout: float) -> bool:
        """Wait (real time) until `count` config downloads have completed."""
        return self._client.wait_for_handshakes(count, timeout)

    @property
    def received(self) -> list[HeardPacket]:
        """Snapshot of every packet this node handed its client (heard on air, or its own notes)."""
        return self._received.snapshot()

    @property
    def received_log(self) -> ReceivedLog:
        """The live log: `subscribe` a listener or `wait_for` a condition."""
        return self._received

    def known_nodes(self) -> list[Identity]:
        """This node and every node it has heard of, as its node DB shows them."""
        with self._lock:
            return [self._own, *self._known.values()]

    # ----- injecting traffic -----------------------------------------------------------------

    def inject_text(
        self,
        sender: int,
        text: str | bytes,
        *,
        to: int | None = None,
        channel: int = 0,
        packet_id: int | None = None,
        hop_start: int = 3,
        hop_limit: int = 3,
        want_ack: bool = False,
        emoji: int = 0,
        portnum: str = "TEXT_MESSAGE_APP",
        reply_id: int | None = None,
        snr: float = 6.0,
        rssi: int = -80,
        via_mqtt: bool = False,
        pki: bool | None = None,
    ) -> int:
        """Deliver a text to the client as if heard over the air (a DM to us unless `to`); return its id.

        Bytes are sent raw (for invalid-UTF-8 tests). `pki` None: a DM to us arrives PKI-encrypted, as a
        firmware 2.7 node hands one over (a known peer's key, else the one the simulator gives that node);
        False: a legacy channel-key DM, as a licensed owner's node hands it over.
        """
        dest = self.node_num if to is None else to
        with self._lock:
            packet_id = packet_id or self._ids.next()
            key = self._known[sender].public_key if sender in self._known else sim_public_key(sender)
        if pki is None:
            pki = dest == self.node_num and channel == 0
        packet = build_text_packet(
            sender=sender,
            to=dest,
            text=text,
            channel=channel,
            packet_id=packet_id,
            hop_start=hop_start,
            hop_limit=hop_limit,
            want_ack=want_ack,
            emoji=emoji,
            portnum=portnum,
            reply_id=reply_id,
            snr=snr,
            rssi=rssi,
            via_mqtt=via_mqtt,
            rx_time=int(self._wall()),
            public_key=key if pki else None,
        )
        self.inject_packet(packet)
        return packet_id

    def inject_packet(self, packet: mesh_pb2.MeshPacket) -> None:
        """Hand any MeshPacket to the client as received, unchecked (for fuzz tests)."""
        self._client.emit([fw.from_radio(packet)])

    def announce(self) -> None:
        """Broadcast our NodeInfo, so other nodes learn our names and key (NodeInfoModule)."""
        with self._lock:
            packet = fw.node_info_packet(
                sender=self.node_num,
                packet_id=self._ids.next(),
                user=self._own.user(),
                hop_limit=self._radio.hop_limit,
            )
            if self.ok_to_mqtt:
                packet.decoded.bitfield |= 1
        self._transmit(packet)

    # ----- LinkHandler: called on the server's I/O thread ----------------------------------

    def on_connect(self, link: ClientLink) -> None:
        """A new client: fresh per-connection state."""
        self._client.attach(link)

    def on_disconnect(self, link: ClientLink) -> None:
        """The client went away; mesh packets wait for the next one."""
        self._client.detach(link)

    def on_frame(self, link: ClientLink, payload: bytes) -> None:
        """One ToRadio from the client."""
        message = mesh_pb2.ToRadio()
        try:
            message.ParseFromString(payload)
        except Exception:  # protobuf DecodeError; the firmware logs and ignores it too
            logger.warning("node %08x: ignoring malformed ToRadio (%d bytes)", self.node_num, len(payload))
            return
        kind = message.WhichOneof("payload_variant")
        session = self._client.session_for(link)
        if session is None:
            return
        if kind == "want_config_id":
            with self._lock:
                self._own = dataclasses.replace(self._own, device_metrics=self.own_device_metrics())
                messages = config_messages(self._own, list(self._known.values()), self._radio, message.want_config_id)
                self._client.send_config(session, messages, full=message.want_config_id != NONCE_ONLY_NODES)
            logger.info("node %08x: config sent to client #%d", self.node_num, link.number)
        elif kind == "heartbeat":
            with self._lock:
                self._client.emit([fw.queue_status(res=0, packet_id=0, free=self._queue_free())])
        elif kind == "disconnect":
            # PhoneAPI::close over TCP is ServerAPI::close: the firmware drops the connection (client.stop()),
            # so a client that says goodbye (the official CLI at exit) sees the end it waits for.
            self._client.pause(session)
            self._server.close_link(link, why="client said disconnect")
        elif kind == "packet":
            self._handle_client_packet(session, message.packet)
        else:
            logger.debug("node %08x: ignoring ToRadio %s", self.node_num, kind)
