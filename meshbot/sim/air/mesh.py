"""The virtual mesh's air: LoRa frames with air time, contention, loss, collisions and flooding.

`MeshAir` implements `Air` for many `VirtualNode`s and plays each node's radio and router:
- a TX queue per node (16 slots, by priority), a transmit timer with the firmware's contention
  delays, carrier sense (a node waits while any neighbour is on air), half duplex;
- a frame is heard at its end by every neighbour that was not itself transmitting, did not hear
  another frame overlapping it less than 6 dB weaker (a collision: hidden terminals; a stronger
  frame captures the receiver) and did not lose it to the link's loss probability;
- flooding with duplicate suppression by (from, id) (FloodingRouter / NextHopRouter): a node
  relays a packet not for it with hop_limit - 1 while hop_limit > 0, after an SNR-weighted delay;
  a CLIENT cancels its queued relay when it hears someone else relay first, a ROUTER does not; a
  packet retried by its originator is relayed again, or re-ACKed by its destination;
- a rolling-hour duty cycle per node: its own packets are refused DUTY_CYCLE_LIMIT, relays dropped.

All timing is on the injected scheduler's clock; randomness comes from one seeded generator, so a
manual (VirtualClock) run is deterministic. The air's lock is a leaf: nodes are called without it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable

from meshtastic.protobuf import mesh_pb2

from meshbot.core import airtime, limits
from meshbot.core.domain import Clock
from meshbot.sim.air.air import AirNode
from meshbot.sim.air.frames import Frame, Radio, Transmission, kind_of
from meshbot.sim.air.scheduler import Scheduler
from meshbot.sim.app.report import NodeStats
from meshbot.sim.rules import firmware as fw
from meshbot.sim.rules.channel import Link, own_tx_delay_s, relay_tx_delay_s

logger = logging.getLogger(__name__)

Priority = mesh_pb2.MeshPacket.Priority
# LoRa's capture effect: a frame survives an overlapping one that arrives this much weaker (same SF).
CAPTURE_MARGIN_DB = 6


class MeshAir:
    """The shared channel of a virtual mesh. Thread-safe."""

    def __init__(
        self,
        *,
        links: dict[int, dict[int, Link]],
        roles: dict[int, str],
        modem_preset: str,
        region: str,
        seed: int,
        scheduler: Scheduler,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._links = links
        self._roles = roles
        self._modem = airtime.preset(modem_preset)
        self._region = region
        self._rng = random.Random(seed)
        self._scheduler = scheduler
        self._clock: Clock = scheduler.clock
        self._wall = wall_clock
        self._lock = threading.Condition(threading.RLock())
        self._radios: dict[int, Radio] = {}
        self._retired: dict[int, NodeStats] = {}  # counters of detached nodes, for the final report
        self._idle_waiters: list[Callable[[], None]] = []
        self._on_air: list[Transmission] = []  # on air now, or ended recently enough to collide
        self._log: list[Transmission] = []
        self._seq = itertools.count()
        self._longest_s = 0.0

    # ----- Air --------------------------------------------------------------------------------

    def attach(self, node: AirNode) -> None:
        """Give `node` a radio; its links come from the topology."""
        if node.node_num not in self._links:
            raise ValueError(f"node {node.node_num:08x} is not in the topology")
        with self._lock:
            role = self._roles.get(node.node_num, "handset")
            self._radios[node.node_num] = Radio(node, self._links[node.node_num], role, self._region)

    def set_loss(self, sender: int, receiver: int, loss: float) -> None:
        """Change one direction of a link while the mesh runs: `receiver` loses this share of `sender`'s frames."""
        with self._lock:
            link = self._links[sender][receiver]  # a KeyError names a link the topology does not have
            self._links[sender][receiver] = dataclasses.replace(link, loss=loss)

    def detach(self, node: AirNode) -> None:
        """Switch the node's radio off (what it has on air still ends)."""
        with self._lock:
            radio = self._radios.pop(node.node_num, None)
            if radio is None:
                return
            if radio.timer is not None:
                radio.timer.cancel()
            self._retired[node.node_num] = radio.stats.snapshot(radio.duty, radio.heard, self._clock.now())

    def transmit(self, sender: AirNode, packet: mesh_pb2.MeshPacket) -> str | None:
        """Queue a node's own packet (Router::send); DUTY_CYCLE_LIMIT when its hour's share is spent."""
        with self._lock:
            radio = self._radios.get(sender.node_num)
            if radio is None:
                return None
            if radio.duty.exceeded(self._clock.now()):
                radio.stats.duty_refused += 1
                logger.info("node %08x: duty cycle exceeded, refusing %08x", sender.node_num, packet.id)
                return "DUTY_CYCLE_LIMIT"
            copy = mesh_pb2.MeshPacket()
            copy.CopyFrom(packet)
            radio.history.seen((getattr(copy, "from"), copy.id))  # never relay our own packet back
            self._enqueue(radio, copy, kind_of(copy))
        return None

    def queue_free(self, node: AirNode) -> int:
        """Free slots in the node's TX queue."""
        with self._lock:
            radio = self._radios.get(node.node_num)
            return limits.TX_QUEUE_SLOTS - (len(radio.queue) if radio else 0)

    def utilisation_percent(self, node: AirNode) -> float:
        """Share of the last minute the node heard the channel busy (its own frames included)."""
        with self._lock:
            radio = self._radios.get(node.node_num)
            return radio.heard.percent(self._clock.now()) if radio else 0.0

    # ----- observation ------------------------------------------------------------------------

    @property
    def transmissions(self) -> list[Transmission]:
        """Every frame put on air so far, in start order."""
        with self._lock:
            return list(self._log)

    def node_stats(self) -> dict[int, NodeStats]:
        """Copies of each attached node's counters, with its duty-cycle figures filled in."""
        now = self._clock.now()
        with self._lock:
            live = {num: r.stats.snapshot(r.duty, r.heard, now) for num, r in self._radios.items()}
            return {**self._retired, **live}

    def idle(self) -> bool:
        """Nothing queued and nothing on air."""
        with self._lock:
            return self._idle()

    def wait_idle(self, timeout: float) -> bool:
        """Wait (real seconds) until the air is idle; True when it is."""
        with self._lock:
            return self._lock.wait_for(self._idle, timeout)

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call `callback` once (on the scheduler's thread) as soon as the air is idle."""
        with self._lock:
            if not self._idle():
                self._idle_waiters.append(callback)
                return
        self._scheduler.call_later(0.0, callback)

    def _idle(self) -> bool:
        return all(not r.queue and r.on_air is None for r in self._radios.values())

    def _notify_idle(self) -> None:
        with self._lock:
            self._lock.notify_all()
            if not self._idle():
                return
            waiters, self._idle_waiters = self._idle_waiters, []
        for callback in waiters:
            callback()

    # ----- queueing ---------------------------------------------------------------------------

    def _enqueue(self, radio: Radio, packet: mesh_pb2.MeshPacket, kind: str, rx_snr: float = 0.0) -> None:
        key = (getattr(packet, "from"), packet.id)
        if any(f.key == key for f in radio.queue):
            return  # a retry of a packet still waiting: the queued copy will do
        if len(radio.queue) >= limits.TX_QUEUE_SLOTS:
            radio.stats.queue_full += 1
            logger.warning("node %08x: TX queue full, dropping %08x", radio.node.node_num, packet.id)
            return
        frame_len = fw.frame_len_on_air(packet, packet.pki_encrypted)
        priority = packet.priority or (Priority.RELIABLE if packet.want_ack else Priority.DEFAULT)
        frame = Frame(
            packet, frame_len, airtime.time_on_air_s(frame_len, self._modem), kind, priority, next(self._seq), rx_snr
        )
        # MeshPacketQueue: highest priority first, first come first served within a priority.
        at = next((i for i, f in enumerate(radio.queue) if f.priority < priority), len(radio.queue))
        radio.queue.insert(at, frame)
        if radio.timer is None and radio.on_air is None:
            self._arm(radio, self._contention_s(radio, frame))

    def _contention_s(self, radio: Radio, frame: Frame) -> float:
        if frame.kind == "relay":
            return relay_tx_delay_s(self._rng, self._modem, frame.rx_snr, early=radio.router)
        return own_tx_delay_s(self._rng, self._modem, radio.heard.percent(self._clock.now()))

    def _arm(self, radio: Radio, delay_s: float) -> None:
        num = radio.node.node_num
        radio.timer = self._scheduler.call_later(delay_s, lambda: self._try_transmit(num))

    def _cancel_relay(self, radio: Radio, key: tuple[int, int]) -> None:
        """Router::cancelSending: drop a queued relay that someone else has already made."""
        before = len(radio.queue)
        radio.queue = [f for f in radio.queue if not (f.kind == "relay" and f.key == key)]
        radio.stats.relays_cancelled += before - len(radio.queue)

    # ----- on air -----------------------------------------------------------------------------

    def _try_transmit(self, num: int) -> None:
        freed: tuple[AirNode, int] | None = None
        with self._lock:
            radio = self._radios.get(num)
            if radio is None:
                return
            radio.timer = None
            if radio.on_air is not None or not radio.queue:
                return
            now = self._clock.now()
            busy_until = self._busy_until(num, now)
            if busy_until is not None:  # CAD found the channel busy: back off past the frame we hear
                self._arm(radio, busy_until - now + self._contention_s(radio, radio.queue[0]))
                return
            frame = radio.queue.pop(0)
            if len(radio.queue) == limits.TX_QUEUE_SLOTS - 1:
                freed = (radio.node, 1)
            self._start(radio, frame, now)
        if freed is not None:
            freed[0].on_queue_freed(freed[1])

    def _start(self, radio: Radio, frame: Frame, now: float) -> None:
        packet = frame.packet
        tx = Transmission(
            radio.node.node_num,
            getattr(packet, "from"),
            packet.id,
            packet.to,
            frame.kind,
            now,
            now + frame.airtime_s,
            frame.frame_len,
            packet.hop_limit,
        )
        radio.on_air = tx
        radio.duty.record(tx.start, tx.end)
        radio.stats.count_frame(frame.kind, frame.airtime_s)
        self._on_air.append(tx)
        self._log.append(tx)
        self._longest_s = max(self._longest_s, frame.airtime_s)
        self._scheduler.call_later(frame.airtime_s, lambda: self._end(tx, frame))

    def _busy_until(self, num: int, now: float) -> float | None:
        radio = self._radios[num]
        ends = [t.end for t in self._on_air if t.end > now and (t.sender == num or t.sender in radio.links)]
        return max(ends) if ends else None

    def _end(self, tx: Transmission, frame: Frame) -> None:
        with self._lock:
            radio = self._radios.get(tx.sender)
            if radio is not None:
                radio.on_air = None
                radio.heard.add(tx.start, tx.end)
                if radio.queue and radio.timer is None:
                    self._arm(radio, self._contention_s(radio, radio.queue[0]))
            heard_by = self._receivers(tx, radio.links if radio else self._links[tx.sender])
            horizon = self._clock.now() - self._longest_s
            self._on_air = [t for t in self._on_air if t.end >= horizon]
        for receiver, link in heard_by:
            self._arrive(receiver, frame.packet, tx, link)
        self._notify_idle()

    def _receivers(self, tx: Transmission, links: dict[int, Link]) -> list[tuple[Radio, Link]]:
        """Who decodes the frame: not transmitting, no overlapping frame in earshot, not lost."""
        out = []
        for num, link in links.items():
            receiver = self._radios.get(num)
            if receiver is None:
                continue
            receiver.heard.add(tx.start, tx.end)
            if self._collided(num, receiver, tx):
                receiver.stats.collisions += 1
                continue
            if link.loss > 0 and self._rng.random() < link.loss:
                receiver.stats.lost += 1
                continue
            out.append((receiver, link))
        return out

    def _collided(self, num: int, receiver: Radio, tx: Transmission) -> bool:
        """Half duplex, or another frame in earshot overlapping this one and not weaker by the capture margin."""
        wanted = receiver.links[tx.sender].rssi
        for t in self._on_air:
            if t is tx or t.start >= tx.end or t.end <= tx.start:
                continue
            if t.sender == num:
                return True
            other = receiver.links.get(t.sender)
            if other is not None and wanted - other.rssi < CAPTURE_MARGIN_DB:
                return True
        return False

    # ----- routing (each receiving node) ------------------------------------------------------

    def _arrive(self, radio: Radio, packet: mesh_pb2.MeshPacket, tx: Transmission, link: Link) -> None:
        heard = mesh_pb2.MeshPacket()
        heard.CopyFrom(packet)
        heard.rx_snr = link.snr
        heard.rx_rssi = link.rssi
        heard.rx_time = int(self._wall())
        heard.relay_node = tx.sender & 0xFF
        heard.transport_mechanism = mesh_pb2.MeshPacket.TransportMechanism.TRANSPORT_LORA
        with self._lock:
            deliver, ack_again = self._route(radio, heard, link)
        if deliver:
            radio.node.receive_from_air(heard)
        if ack_again:
            radio.node.acknowledge(heard)

    def _route(self, radio: Radio, heard: mesh_pb2.MeshPacket, link: Link) -> tuple[bool, bool]:
        """Router decisions for a frame this node decoded: (hand it to the node, ACK it again)."""
        num = radio.node.node_num
        key = (getattr(heard, "from"), heard.id)
        radio.stats.decoded += 1
        if heard.via_mqtt and getattr(radio.node, "ignore_mqtt", False):
            return False, False  # Router::perhapsHandleReceived: neither shown nor relayed
        if key[0] == num:
            return True, False  # our own packet relayed: the node takes it as an implicit ACK
        if radio.history.seen(key):
            radio.stats.duplicates += 1
            repeated = heard.hop_start == heard.hop_limit  # straight from its originator: a retry
            if repeated and not any(f.key == key for f in radio.queue):
                if self._may_relay(num, heard):
                    self._relay(radio, heard, link)
                    return False, False
                return False, heard.to == num and heard.want_ack
            if not repeated and not radio.router:
                self._cancel_relay(radio, key)
            return False, False
        if heard.decoded.request_id and heard.to not in (num, limits.BROADCAST_NUM):
            self._cancel_relay(radio, (heard.to, heard.decoded.request_id))  # answered: stop relaying the DM
        if self._may_relay(num, heard):
            self._relay(radio, heard, link)
        elif heard.to != num and heard.hop_limit == 0:
            radio.stats.hop_limit_stops += 1
        return True, False

    @staticmethod
    def _may_relay(num: int, packet: mesh_pb2.MeshPacket) -> bool:
        return packet.to != num and getattr(packet, "from") != num and packet.hop_limit > 0 and packet.id != 0

    def _relay(self, radio: Radio, heard: mesh_pb2.MeshPacket, link: Link) -> None:
        if radio.duty.exceeded(self._clock.now()):
            radio.stats.duty_refused += 1  # Router::send drops a relay silently
            return
        relay = mesh_pb2.MeshPacket()
        relay.CopyFrom(heard)
        relay.hop_limit = heard.hop_limit - 1
        relay.relay_node = radio.node.node_num & 0xFF
        for name in ("rx_snr", "rx_rssi", "rx_time"):
            relay.ClearField(name)
        self._enqueue(radio, relay, "relay", rx_snr=link.snr)
