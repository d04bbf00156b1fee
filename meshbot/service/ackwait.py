"""Waiting for the ACK of one text: every attempt's answers in one inbox, filled from the radio's thread."""

from __future__ import annotations

import threading

from meshbot.core.domain import AckStatus, Clock, SendResult


class Stopped(Exception):
    """stop() cut a send short: the job is left for the next start."""


class AckInbox:
    """ACKs and NAKs for every attempt of one job, filled from the radio's thread."""

    def __init__(self) -> None:
        self._results: list[SendResult] = []
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._relinked = False  # the radio reconnected since this attempt was sent

    def new_attempt(self) -> None:
        """A copy is about to go: NAKs so far answered earlier copies (ACKs stay: any ACK means delivered)."""
        with self._lock:
            self._results = [r for r in self._results if r.status in (AckStatus.ACKED, AckStatus.IMPLICIT)]
            self._relinked = False

    def relinked(self) -> None:
        """The radio reconnected: a wait in progress ends with RECONNECTED unless a verdict is in."""
        with self._lock:
            self._relinked = True
        self._changed.set()

    def put(self, result: SendResult) -> None:
        """Called by the radio with an ACK or NAK."""
        with self._lock:
            self._results.append(result)
        self._changed.set()

    def _verdict(self, packet_id: int) -> SendResult | None:
        with self._lock:
            self._changed.clear()  # under the lock, before reading: no wake-up can be lost
            acks = [r for r in self._results if r.status in (AckStatus.ACKED, AckStatus.IMPLICIT)]
            if acks:
                return acks[0]  # any attempt delivered: done
            naks = [r for r in self._results if r.packet_id in (packet_id, 0)]
            if naks:
                return naks[-1]
            if self._relinked:
                self._relinked = False
                return SendResult(packet_id, AckStatus.FAILED, "RECONNECTED")
            return None

    def wake(self) -> None:
        """Make a waiting `wait` look at its stop flag now."""
        self._changed.set()

    def wait(self, clock: Clock, packet_id: int, timeout: float, stopping: threading.Event) -> SendResult | None:
        """The verdict for the current attempt, or None on timeout; raises Stopped once `stopping` is set."""
        deadline = clock.now() + timeout
        while True:
            verdict = self._verdict(packet_id)
            left = deadline - clock.now()
            if verdict is not None or left <= 0:
                return verdict
            if stopping.is_set():
                raise Stopped
            clock.wait_for(self._changed, left)
