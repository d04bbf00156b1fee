"""Clocks: the real one, and a virtual one for tests and the simulator."""

from __future__ import annotations

import threading
import time


class SystemClock:
    """Real monotonic time."""

    def now(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        if seconds > 0:
            time.sleep(seconds)

    def wait_for(self, event: threading.Event, timeout: float) -> bool:
        """Block on the event for real."""
        return event.wait(timeout)


class VirtualClock:
    """A clock that only moves when someone sleeps on it or calls `advance`.

    Thread-safe: several threads may sleep; each sleep advances time to its own
    wake-up instant, so pacing logic sees exactly the gaps it asked for.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Virtual seconds."""
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Advance virtual time by `seconds` instead of blocking."""
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._now += seconds

    def wait_for(self, event: threading.Event, timeout: float) -> bool:
        """Return at once: set events win; otherwise the whole timeout elapses virtually."""
        if event.is_set():
            return True
        self.sleep(timeout)
        return event.is_set()

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.sleep(seconds)


class ScaledClock:
    """Real time sped up `scale` times: the simulator and a daemon under test share one.

    `now()` advances `scale` simulated seconds per real second; sleeps and waits take
    1/scale of their simulated length in real time.
    """

    def __init__(self, scale: float = 1.0, start: float = 0.0) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale
        self._start = start
        self._real0 = time.monotonic()

    def now(self) -> float:
        """Simulated seconds."""
        return self._start + (time.monotonic() - self._real0) * self.scale

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of simulated time."""
        if seconds > 0:
            time.sleep(seconds / self.scale)

    def wait_for(self, event: threading.Event, timeout: float) -> bool:
        """Wait up to `timeout` simulated seconds for the event."""
        return event.wait(max(timeout, 0.0) / self.scale)
