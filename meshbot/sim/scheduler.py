"""A small real-time timer thread: run callbacks after a delay, without one thread per timer."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

logger = logging.getLogger(__name__)


@dataclass(order=True)
class _Entry:
    due: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class TimerHandle:
    """Returned by `Scheduler.call_later`; cancel it to skip the callback."""

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry

    def cancel(self) -> None:
        """Skip the callback if it has not run yet."""
        self._entry.cancelled = True


class Scheduler:
    """Runs callbacks on one background thread, each after its delay in real (monotonic) seconds.

    Callbacks run one at a time, in due order; an exception in one is logged and does not stop
    the others. Waiting uses a condition variable, so an idle scheduler costs no CPU.
    """

    def __init__(self, name: str = "sim-timer") -> None:
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        """Start the timer thread (idempotent)."""
        with self._cond:
            if self._started:
                return
            self._started = True
        self._thread.start()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` on the timer thread after `delay_s` seconds."""
        entry = _Entry(time.monotonic() + max(delay_s, 0.0), next(self._seq), callback)
        with self._cond:
            if self._closed:
                entry.cancelled = True
                return TimerHandle(entry)
            heapq.heappush(self._heap, entry)
            self._cond.notify()
        return TimerHandle(entry)

    def close(self) -> None:
        """Drop pending callbacks and join the thread."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join()

    def _next_due(self) -> _Entry | None:
        """Block until an entry is due or the scheduler closes; None when closed."""
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0].due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
                if not entry.cancelled:
                    return entry
            return None

    def _run(self) -> None:
        while True:
            entry = self._next_due()
            if entry is None:
                return
            try:
                entry.callback()
            except Exception:  # a broken callback must not kill every later timer
                logger.exception("timer callback failed")
