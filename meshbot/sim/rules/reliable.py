"""ReliableRouter's pending list: retransmit a want_ack packet until it is answered, then give up."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from meshtastic.protobuf import mesh_pb2

from meshbot.core import limits
from meshbot.sim.air.scheduler import Scheduler, TimerHandle

logger = logging.getLogger(__name__)

GIVE_UP = "MAX_RETRANSMIT"


@dataclass
class Pending:
    """A want_ack packet on air, waiting for its ACK."""

    index: int  # the caller's record of it
    packet: mesh_pb2.MeshPacket  # as put on air
    attempts: int = 1
    timer: TimerHandle | None = None
    earlier: tuple[int, ...] = ()  # records of copies under the same id that this one took over (a client resend)


class ReliableSends:
    """Tracks want_ack packets; every method but `cancel_all` expects the owner's `lock` held.

    After each `interval_s(packet)` without an answer the packet goes out again through
    `transmit`, up to `limits.MAX_RETRANSMIT` transmissions in all (NextHopRouter's
    NUM_RELIABLE_RETX); then `finish(pending, "MAX_RETRANSMIT", False)`. `transmit` may return a
    Routing.Error name (say, DUTY_CYCLE_LIMIT) that ends the packet at once.
    """

    def __init__(
        self,
        *,
        scheduler: Scheduler,
        lock: threading.RLock,
        interval_s: Callable[[mesh_pb2.MeshPacket], float],
        transmit: Callable[[mesh_pb2.MeshPacket], str | None],
        finish: Callable[[Pending, str, bool], None],
    ) -> None:
        self._scheduler = scheduler
        self._lock = lock
        self._interval_s = interval_s
        self._transmit = transmit
        self._finish = finish
        self._pending: dict[int, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, index: int, packet: mesh_pb2.MeshPacket) -> None:
        """Start waiting for an answer to `packet`, which is going on air now.

        A client that sends the same id again (after a reconnect) restarts the wait, as Router::send restarts the
        retransmission of that key; the earlier copy's record ends with the new one's verdict, never left pending.
        """
        before = self._pending.pop(packet.id, None)
        earlier: tuple[int, ...] = ()
        if before is not None:
            if before.timer is not None:
                before.timer.cancel()
            earlier = (*before.earlier, before.index)
        self._pending[packet.id] = Pending(index, packet, earlier=earlier)
        self._arm(packet.id)

    def destination(self, packet_id: int) -> int | None:
        """Where a pending packet went, or None if `packet_id` is not pending."""
        pending = self._pending.get(packet_id)
        return None if pending is None else pending.packet.to

    def resolve(self, packet_id: int, error: str, *, implicit: bool) -> None:
        """End a pending packet with a Routing.Error name (``NONE`` for an ACK)."""
        pending = self._pending.pop(packet_id, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        self._finish(pending, error, implicit)

    def cancel_all(self) -> None:
        """Stop every retransmission timer (on shutdown)."""
        with self._lock:
            for pending in self._pending.values():
                if pending.timer is not None:
                    pending.timer.cancel()

    def _arm(self, packet_id: int) -> None:
        pending = self._pending[packet_id]
        pending.timer = self._scheduler.call_later(self._interval_s(pending.packet), lambda: self._on_timer(packet_id))

    def _on_timer(self, packet_id: int) -> None:
        with self._lock:
            pending = self._pending.get(packet_id)
            if pending is None:
                return
            if pending.attempts >= limits.MAX_RETRANSMIT:
                self.resolve(packet_id, GIVE_UP, implicit=False)
                return
            pending.attempts += 1
            self._arm(packet_id)
            again = pending.packet
        logger.debug("retransmitting %08x (attempt %d)", packet_id, pending.attempts)
        error = self._transmit(again)
        if error is not None:
            with self._lock:
                self.resolve(packet_id, error, implicit=False)
