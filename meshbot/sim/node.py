"""A virtual Meshtastic node: speaks the TCP stream API to one client, and talks to an `Air`.

The real `meshtastic.tcp_interface.TCPInterface` connects to it unmodified. Behaviour follows the
firmware (PhoneAPI, MeshService, Router, ReliableRouter); see `firmware.py` for the pure rules.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot import airtime, limits
from meshbot.clock import SystemClock
from meshbot.domain import Clock
from meshbot.sim import firmware as fw
from meshbot.sim.air import Air, LoopbackAir
from meshbot.sim.handshake import Identity, RadioSettings, config_messages, sim_public_key
from meshbot.sim.inject import build_text_packet
from meshbot.sim.phone import ClientSide, Session
from meshbot.sim.records import ACK, SentLog, SentPacket, record_of
from meshbot.sim.reliable import Pending, ReliableSends
from meshbot.sim.scheduler import Scheduler
from meshbot.sim.server import ClientLink, StreamServer

logger = logging.getLogger(__name__)

# RadioInterface::getRetransmissionMsec: twice the packet's air time, a contention window, and
# PROCESSING_TIME_MSEC (4.5 s) to build, process and rebuild a packet. We keep air time + processing.
RETRANSMIT_PROCESSING_S = 4.5


class VirtualNode:
    """A Meshtastic node on 127.0.0.1 for tests and the demo. Thread-safe; start it once.

    `clock` (default: real monotonic time) stamps `SentPacket.at` and drives the 2 s text rate
    limit. Delays on air (`ack_delay_s` of the default `LoopbackAir`, `retransmit_s` between
    tries of an unanswered want_ack packet, None: air time + firmware processing) are real
    seconds. `channel_names` are the enabled channels (index 0 PRIMARY); a send on another
    index is NAKed NO_CHANNEL. Pass `air` to put the node on a shared simulated mesh.
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
    ) -> None:
        if node_num in (0, limits.BROADCAST_NUM) or not 0 < node_num <= 0xFFFFFFFF:
            raise ValueError(f"node_num {node_num:#x} is not a usable node number")
        self._own = Identity(node_num, long_name, short_name, sim_public_key(node_num))
        self._radio = RadioSettings(modem_preset, region, hop_limit, tuple(channel_names))
        self._radio.lora()  # fail now, not at first connect, on a bad preset or region name
        now_wall = int(wall_clock())
        self._known: dict[int, Identity] = {
            num: Identity(num, long, short, sim_public_key(num), snr=6.0, last_heard=now_wall)
            for num, long, short in peers
        }
        self._clock: Clock = clock or SystemClock()
        self._wall = wall_clock
        self._scheduler = Scheduler(name=f"node-{node_num:08x}-timer")
        self.air: Air = air or LoopbackAir(self._scheduler, ack_delay_s=ack_delay_s, seed=node_num)
        self._retransmit_s = retransmit_s
        self._ids = fw.PacketIdGenerator(node_num)
        # Lock order: this lock, then ClientSide's, then a link's write lock; never the reverse.
        self._lock = threading.RLock()
        self._log = SentLog()
        self._client = ClientSide(f"node {node_num:08x}")
        self._reliable = ReliableSends(
            scheduler=self._scheduler, lock=self._lock, interval_s=self._retransmit_interval,
            transmit=lambda packet: self.air.transmit(self, packet), finish=self._finish,
        )
        self._history = fw.RecentKeys(fw.PACKET_HISTORY_LEN)
        self._server = StreamServer(self, host=host, port=port, name=f"node-{node_num:08x}")

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and accept in a background thread; returns once listening."""
        self._scheduler.start()
        self.air.attach(self)
        self._server.start()

    def stop(self) -> None:
        """Close the client and listener, stop timers, join threads."""
        self._server.stop()
        self.air.detach(self)
        self._scheduler.close()
        self._reliable.cancel_all()

    def __enter__(self) -> "VirtualNode":
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

        Bytes are sent raw (for invalid-UTF-8 tests). `pki` None: a DM from a known peer arrives
        PKI-encrypted, as the firmware would report it.
        """
        dest = self.node_num if to is None else to
        with self._lock:
            packet_id = packet_id or self._ids.next()
            key = self._known[sender].public_key if sender in self._known else b""
        if pki is None:
            pki = bool(key) and dest == self.node_num and channel == 0
        packet = build_text_packet(
            sender=sender, to=dest, text=text, channel=channel, packet_id=packet_id,
            hop_start=hop_start, hop_limit=hop_limit, want_ack=want_ack, emoji=emoji,
            portnum=portnum, reply_id=reply_id, snr=snr, rssi=rssi, via_mqtt=via_mqtt,
            rx_time=int(self._wall()), public_key=key if pki else None,
        )
        self.inject_packet(packet)
        return packet_id

    def inject_packet(self, packet: mesh_pb2.MeshPacket) -> None:
        """Hand any MeshPacket to the client as received, unchecked (for fuzz tests)."""
        self._client.emit([_wrap(packet)])

    # ----- the air side ----------------------------------------------------------------------

    def receive_from_air(self, packet: mesh_pb2.MeshPacket) -> None:
        """Called by the air with a packet this node heard."""
        sender = getattr(packet, "from")
        ack: mesh_pb2.MeshPacket | None = None
        with self._lock:
            if sender == self.node_num:
                self._reliable.resolve(packet.id, fw.OK, implicit=True)  # a neighbour relayed our packet
                return
            if self._history.seen((sender, packet.id)):
                return  # flooded duplicate
            self._learn(packet)
            answer = fw.routing_error_of(packet)
            if answer is not None and self._reliable.destination(packet.decoded.request_id) == sender:
                self._reliable.resolve(packet.decoded.request_id, answer, implicit=False)
            if packet.to in (self.node_num, limits.BROADCAST_NUM):
                heard = mesh_pb2.MeshPacket()
                heard.CopyFrom(packet)
                if not heard.rx_time:
                    heard.rx_time = int(self._wall())
                self._client.emit([_wrap(heard)])
            if packet.to == self.node_num and packet.want_ack and answer is None:
                ack = fw.routing_packet(
                    sender=self.node_num, to=sender, packet_id=self._ids.next(), request_id=packet.id,
                    hop_limit=self._radio.hop_limit, hop_start=self._radio.hop_limit,
                )
        if ack is not None:
            self.air.transmit(self, ack)

    def _learn(self, packet: mesh_pb2.MeshPacket) -> None:
        """NodeDB::updateFrom for NODEINFO_APP: remember names and keys of nodes we hear."""
        if packet.decoded.portnum != portnums_pb2.NODEINFO_APP:
            return
        user = mesh_pb2.User()
        try:
            user.ParseFromString(packet.decoded.payload)
        except Exception:  # protobuf DecodeError: a garbled NodeInfo teaches nothing
            return
        num = getattr(packet, "from")
        self._known[num] = Identity(num, user.long_name, user.short_name, user.public_key)

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
                messages = config_messages(self._own, list(self._known.values()), self._radio, message.want_config_id)
                self._client.send_config(session, messages)
            logger.info("node %08x: config sent to client #%d", self.node_num, link.number)
        elif kind == "heartbeat":
            with self._lock:
                self._client.emit([fw.queue_status(res=0, packet_id=0, free=self._queue_free())])
        elif kind == "disconnect":
            self._client.pause(session)
        elif kind == "packet":
            self._handle_client_packet(session, message.packet)
        else:
            logger.debug("node %08x: ignoring ToRadio %s", self.node_num, kind)

    # ----- client packets --------------------------------------------------------------------

    def _handle_client_packet(self, session: Session, packet: mesh_pb2.MeshPacket) -> None:
        with self._lock:
            on_air = self._admit(session, packet)
        if on_air is None:
            return
        error = self.air.transmit(self, on_air)
        if error is not None:
            with self._lock:
                self._reliable.resolve(on_air.id, error, implicit=False)

    def _admit(self, session: Session, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket | None:
        """PhoneAPI + Router checks; returns the packet to put on air, or None when it stops here."""
        if packet.id and session.recent.seen(packet.id):
            logger.debug("node %08x: ignoring repeated packet id %08x", self.node_num, packet.id)
            return None
        if not packet.HasField("decoded"):
            logger.warning("node %08x: client sent an encrypted packet; ignored", self.node_num)
            self._client.emit([fw.queue_status(res=0, packet_id=packet.id, free=self._queue_free())])
            return None
        if not packet.id:
            packet.id = self._ids.next()
        dest = self._known.get(packet.to)
        pki = fw.uses_pki(packet, dest_has_key=bool(dest and dest.public_key))
        frame_len = fw.frame_len_on_air(packet, pki)
        record = record_of(packet, at=self._clock.now(), pki=pki, frame_len=frame_len)
        index = self._record(record)
        is_text = packet.decoded.portnum == portnums_pb2.TEXT_MESSAGE_APP
        if is_text and not session.rate.admit(record.at):
            return self._refuse(index, packet, "RATE_LIMIT_EXCEEDED", res=0)
        if packet.to == self.node_num:
            self._settle(index, ACK)  # to ourselves: handled locally, never on air
            self._client.emit([fw.queue_status(res=0, packet_id=packet.id, free=self._queue_free())])
            return None
        if frame_len > limits.MAX_LORA_FRAME_LEN:
            return self._refuse(index, packet, "TOO_LARGE", res=fw.error_code("TOO_LARGE"))
        if not pki and packet.channel >= len(self._radio.channel_names):
            return self._refuse(index, packet, "NO_CHANNEL", res=fw.error_code("NO_CHANNEL"))
        on_air = self._on_air_copy(packet, pki)
        self._client.emit([fw.queue_status(res=0, packet_id=packet.id, free=self._queue_free())])
        if packet.want_ack:
            self._reliable.track(index, on_air)
        else:
            self._settle(index, ACK)
        return on_air

    def _refuse(self, index: int, packet: mesh_pb2.MeshPacket, error: str, *, res: int) -> None:
        """Queue status with `res`, then a NAK from this node (Router::abortSendAndNak)."""
        self._settle(index, error)
        nak = fw.routing_packet(
            sender=self.node_num, to=self.node_num, packet_id=self._ids.next(),
            request_id=packet.id, error=error, channel=packet.channel if error != "TOO_LARGE" else 0,
        )
        nak.rx_time = int(self._wall())
        self._client.emit([fw.queue_status(res=res, packet_id=packet.id, free=self._queue_free()), _wrap(nak)])
        logger.info("node %08x: NAK %s for packet %08x", self.node_num, error, packet.id)
        return None

    def _on_air_copy(self, packet: mesh_pb2.MeshPacket, pki: bool) -> mesh_pb2.MeshPacket:
        """What Router::send puts on air: our `from`, hop_start, no want_ack on broadcasts."""
        out = mesh_pb2.MeshPacket()
        out.CopyFrom(packet)
        setattr(out, "from", self.node_num)
        if out.want_ack and out.hop_limit == 0:
            out.hop_limit = self._radio.hop_limit  # Router::sendLocal: acks need at least one hop
        out.hop_start = out.hop_limit
        out.relay_node = self.node_num & 0xFF
        if fw.is_broadcast(out.to):
            out.want_ack = False
        if pki:
            out.pki_encrypted = True
            out.channel = 0
        if not out.decoded.HasField("bitfield"):
            out.decoded.bitfield = 0
        return out

    def _retransmit_interval(self, packet: mesh_pb2.MeshPacket) -> float:
        if self._retransmit_s is not None:
            return self._retransmit_s
        frame = fw.frame_len_on_air(packet, packet.pki_encrypted)
        return 2 * airtime.time_on_air_s(frame, airtime.preset(self._radio.modem_preset)) + RETRANSMIT_PROCESSING_S

    def _finish(self, pending: Pending, error: str, implicit: bool) -> None:
        """A want_ack packet ended; tell the client unless the destination's ACK is on its way to it."""
        self._settle(pending.index, ACK if error == fw.OK else error)
        if implicit or error != fw.OK:
            # Implicit ACKs and our own give-ups come from this node (ReliableRouter / abortSendAndNak).
            note = fw.routing_packet(
                sender=self.node_num, to=self.node_num, packet_id=self._ids.next(),
                request_id=pending.packet.id, error=error, channel=pending.packet.channel,
            )
            note.rx_time = int(self._wall())
            self._client.emit([_wrap(note)])

    # ----- bookkeeping -----------------------------------------------------------------------

    def _record(self, record: SentPacket) -> int:
        logger.debug(
            "node %08x: client sent %08x %s to %08x", self.node_num, record.packet_id, record.portnum, record.to
        )
        return self._log.add(record)

    def _settle(self, index: int, outcome: str) -> None:
        self._log.settle(index, outcome)

    def _queue_free(self) -> int:
        # Transmissions leave at once here, so the TX queue is always empty. An air with real air
        # time must report its occupancy, and send a queueStatus when `free` rises from 0
        # (MeshService::loop): the library stops sending while it last heard free == 0.
        return limits.TX_QUEUE_SLOTS


def _wrap(packet: mesh_pb2.MeshPacket) -> mesh_pb2.FromRadio:
    message = mesh_pb2.FromRadio()
    message.packet.CopyFrom(packet)
    return message
