"""Timers for the simulator, in a `Clock`'s time: one background thread, or stepped by hand.

A `Scheduler` keeps its due times in clock seconds. Threaded (the default), it waits on a
condition variable for `(due - now) / scale` real seconds, so a `ScaledClock(scale)` runs timers
`scale` times faster than real time and an idle scheduler costs no CPU. `manual=True` starts no
thread: `run_until` / `run_for` pop timers in due order and move a `VirtualClock` to each due
time before running it, which makes a whole mesh a deterministic discrete-event simulation.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from meshbot.core.clock import SystemClock
from meshbot.core.domain import Clock

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

    @property
    def due(self) -> float:
        """When the callback runs, in the scheduler's clock seconds."""
        return self._entry.due


class Scheduler:
    """Runs callbacks one at a time, in due order, each after its delay in `clock` seconds.

    An exception in one callback is logged and does not stop the others. Ties run in the order
    they were scheduled, so a manual run is fully deterministic.
    """

    def __init__(self, name: str = "sim-timer", clock: Clock | None = None, *, manual: bool = False) -> None:
        self.clock: Clock = clock or SystemClock()
        # Only a ScaledClock runs faster than real time; the others tick at one second per second.
        self._scale = float(getattr(self.clock, "scale", 1.0))
        self.manual = manual
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        """Start the timer thread (idempotent; a manual scheduler has none)."""
        with self._cond:
            if self._started or self.manual:
                return
            self._started = True
        self._thread.start()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` after `delay_s` clock seconds."""
        entry = _Entry(self.clock.now() + max(delay_s, 0.0), next(self._seq), callback)
        with self._cond:
            if self._closed:
                entry.cancelled = True
                return TimerHandle(entry)
            heapq.heappush(self._heap, entry)
            self._cond.notify()
        return TimerHandle(entry)

    def pending(self) -> int:
        """Timers not yet run or cancelled."""
        with self._cond:
            return sum(1 for e in self._heap if not e.cancelled)

    def close(self) -> None:
        """Drop pending callbacks and join the thread."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join()

    # ----- manual stepping -------------------------------------------------------------------

    def run_until(self, until: float) -> int:
        """Manual mode: run every timer due by `until`, moving the clock to each; return how many ran."""
        if not self.manual:
            raise RuntimeError("run_until needs a manual scheduler")
        ran = 0
        while True:
            with self._cond:
                entry = self._pop_due(until)
            if entry is None:
                break
            self._advance_to(entry.due)
            self._call(entry)
            ran += 1
        self._advance_to(until)
        return ran

    def run_for(self, seconds: float) -> int:
        """Manual mode: run the next `seconds` of clock time."""
        return self.run_until(self.clock.now() + seconds)

    def _pop_due(self, until: float) -> _Entry | None:
        while self._heap and not self._closed:
            if self._heap[0].due > until:
                return None
            entry = heapq.heappop(self._heap)
            if not entry.cancelled:
                return entry
        return None

    def _advance_to(self, when: float) -> None:
        gap = when - self.clock.now()
        if gap > 0:
            advance = getattr(self.clock, "advance", None)
            if advance is None:
                raise RuntimeError("a manual scheduler needs a clock with advance(), e.g. VirtualClock")
            advance(gap)

    # ----- the timer thread ------------------------------------------------------------------

    def _next_due(self) -> _Entry | None:
        """Block until an entry is due or the scheduler closes; None when closed."""
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = (self._heap[0].due - self.clock.now()) / self._scale
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
            self._call(entry)

    @staticmethod
    def _call(entry: _Entry) -> None:
        try:
            entry.callback()
        except Exception:  # a broken callback must not kill every later timer
            logger.exception("timer callback failed")
