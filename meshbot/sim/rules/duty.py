"""Rolling air-time accounts: a node's duty cycle (its own transmissions over an hour) and the
channel utilisation it hears (everything on air within range over a minute). Pure.

The firmware keeps per-minute buckets (airtime.cpp); an exact rolling window gives the same
answer at minute boundaries and is simpler to test.
"""

from __future__ import annotations

from collections import deque

from meshbot.core import limits

DUTY_WINDOW_S = 3600.0  # the regulators' rolling hour
UTILISATION_WINDOW_S = 60.0  # airtime.cpp: CHANNEL_UTILIZATION_PERIODS of 10 s


class AirtimeWindow:
    """Sum of busy intervals that fall inside the last `window_s` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._spans: deque[tuple[float, float]] = deque()
        self._total = 0.0
        self.lifetime_s = 0.0  # everything ever added, for reports
        self.peak_percent = 0.0  # the highest share seen at any `add`

    def add(self, start: float, end: float) -> None:
        """Record that the air was busy from `start` to `end`."""
        if end <= start:
            return
        self._spans.append((start, end))
        self._total += end - start
        self.lifetime_s += end - start
        self.peak_percent = max(self.peak_percent, self.percent(end))

    def busy_s(self, now: float) -> float:
        """Busy seconds within [now - window, now]."""
        horizon = now - self.window_s
        while self._spans and self._spans[0][1] <= horizon:
            start, end = self._spans.popleft()
            self._total -= end - start
        busy = self._total
        for start, end in self._spans:  # spans straddling the horizon count only their recent part
            if start >= horizon:
                break
            busy -= min(end, horizon) - start
        for start, end in reversed(self._spans):  # and spans not finished yet only up to now
            if end <= now:
                break
            busy -= end - max(start, now)
        return max(busy, 0.0)

    def percent(self, now: float) -> float:
        """Busy share of the window, in percent (never above 100)."""
        return min(100.0, 100.0 * self.busy_s(now) / self.window_s)


class DutyCycle:
    """A node's transmissions over the rolling hour, against its region's share (Router::send)."""

    def __init__(self, region: str) -> None:
        self.limit_percent = limits.duty_cycle_percent(region)
        self.window = AirtimeWindow(DUTY_WINDOW_S)

    def exceeded(self, now: float) -> bool:
        """True when a new transmission must be refused: the hour's share is already over the limit."""
        if self.limit_percent >= 100.0:
            return False
        return self.window.percent(now) > self.limit_percent

    def record(self, start: float, end: float) -> None:
        """Count a transmission."""
        self.window.add(start, end)
