"""Matching ACKs and NAKs to the sends they answer. Pure threading, no I/O."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from meshbot.core.domain import SendResult


class AckRouter:
    """Hands each ACK or NAK to the callback of the send it answers, whichever link it came on.

    The answer can be published before `send` has learnt its packet id (the library writes,
    then returns; its reader thread may already have the ACK), so an answer nobody expects
    yet is kept for a while and handed over when the callback arrives.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[float, Callable[[SendResult], None]]] = {}
        self._early: dict[int, tuple[float, SendResult]] = {}

    def expect(self, packet_id: int, on_result: Callable[[SendResult], None]) -> None:
        """Call `on_result` with the first answer to `packet_id` (at once if it came already)."""
        with self._lock:
            self._prune()
            early = self._early.pop(packet_id, None)
            if early is None:
                self._waiting[packet_id] = (self._clock(), on_result)
        if early is not None:
            on_result(early[1])

    def resolve(self, packet_id: int, result: SendResult) -> None:
        """An answer arrived for `packet_id`."""
        with self._lock:
            self._prune()
            waiting = self._waiting.pop(packet_id, None)
            if waiting is None:
                self._early[packet_id] = (self._clock(), result)
        if waiting is not None:
            waiting[1](result)

    def pending(self) -> int:
        """Sends still waiting for an answer."""
        with self._lock:
            return len(self._waiting)

    def _prune(self) -> None:
        cutoff = self._clock() - self._ttl_s
        for table in (self._waiting, self._early):
            for packet_id in [k for k, (at, _) in table.items() if at < cutoff]:
                del table[packet_id]
