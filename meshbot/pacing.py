"""Air-time-aware pacing: gaps between texts and the bot's rolling-hour air-time budget. Pure."""

from __future__ import annotations

from collections import deque

from meshbot import limits
from meshbot.airtime import ModemPreset, time_on_air_s

# The firmware's duty-cycle window (mesh-facts "Duty cycle": a rolling 60-minute share).
DUTY_WINDOW_S = 3600.0


def hourly_budget_s(region: str, budget_percent: float | None) -> float:
    """Seconds of air time per rolling hour the bot allows itself: default half the region's duty cycle."""
    percent = budget_percent if budget_percent is not None else limits.duty_cycle_percent(region) / 2
    return DUTY_WINDOW_S * percent / 100.0


class AirtimeLedger:
    """Our own transmissions over the last hour."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, float]] = deque()
        self._total = 0.0

    def record(self, now: float, airtime_s: float) -> None:
        """Account one transmission that started at `now`."""
        self._entries.append((now, airtime_s))
        self._total += airtime_s

    def used(self, now: float) -> float:
        """Seconds on air within the last hour."""
        while self._entries and self._entries[0][0] <= now - DUTY_WINDOW_S:
            self._total -= self._entries.popleft()[1]
        return max(self._total, 0.0)


class Pacer:
    """When the next text may go, and how much of the hour's budget is left."""

    def __init__(self, modem: ModemPreset, min_gap_s: float, budget_s: float) -> None:
        self.modem = modem
        # Never below the firmware's text rate limit (plus jitter margin), whatever the config says.
        self.min_gap_s = max(min_gap_s, limits.TEXT_RATE_LIMIT_S + limits.TEXT_RATE_LIMIT_MARGIN_S)
        self.budget_s = budget_s
        self.ledger = AirtimeLedger()
        self._last_start: float | None = None
        self._last_airtime = 0.0

    def airtime_of(self, text: str, *, reply_id: bool = False) -> float:
        """Seconds on air of a text packet on this preset."""
        frame = limits.text_frame_len(len(text.encode("utf-8")), reply_id=reply_id)
        return time_on_air_s(frame, self.modem)

    def earliest_send(self) -> float:
        """The first instant the next text may be handed to the radio."""
        if self._last_start is None:
            return float("-inf")
        # The next packet may not start before the previous one has left the air.
        return self._last_start + max(self.min_gap_s, self._last_airtime)

    def on_sent(self, now: float, airtime_s: float) -> None:
        """Record a text handed to the radio at `now`."""
        self._last_start = now
        self._last_airtime = airtime_s
        self.ledger.record(now, airtime_s)

    def budget_left(self, now: float) -> float:
        """Seconds of air time left in the rolling hour."""
        return max(self.budget_s - self.ledger.used(now), 0.0)

    def affordable_fragments(self, now: float, wanted: int, fragment_airtime_s: float) -> int:
        """How many full fragments fit in what is left of the budget (at most `wanted`)."""
        if fragment_airtime_s <= 0:
            return wanted
        return max(0, min(wanted, int(self.budget_left(now) // fragment_airtime_s)))
