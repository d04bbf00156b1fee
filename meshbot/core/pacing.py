"""Air-time-aware pacing: gaps between texts and the bot's rolling-hour air-time budget. Pure."""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from typing import Protocol

from meshbot.core import limits
from meshbot.core.airtime import ModemPreset, time_on_air_s

# The firmware's duty-cycle window (mesh-facts "Duty cycle": a rolling 60-minute share).
DUTY_WINDOW_S = 3600.0
# Our estimate of the node's air time is not exact (relays we cannot see): stay under this share
# of the region's limit.
REGION_LIMIT_MARGIN = 0.9
# After a DUTY_CYCLE_LIMIT NAK the node's own account is full: send nothing for this long.
DUTY_NAK_HOLD_S = 600.0


def region_limit_s(region: str) -> float:
    """Seconds per rolling hour the firmware lets the node transmit in a region."""
    return DUTY_WINDOW_S * limits.duty_cycle_percent(region) / 100.0


def hourly_budget_s(region: str, budget_percent: float | None) -> float:
    """Seconds of air time per rolling hour the bot allows itself: default half the region's duty cycle."""
    percent = budget_percent if budget_percent is not None else limits.duty_cycle_percent(region) / 2
    return DUTY_WINDOW_S * percent / 100.0


class AirtimeRecorder(Protocol):
    """What the pacer keeps its own transmissions in: an `AirtimeLedger`, or one shared by several workers."""

    def record(self, now: float, airtime_s: float) -> None: ...
    def used(self, now: float) -> float: ...


class AirtimeLedger:
    """Our own transmissions over the last hour."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, float]] = deque()
        self._total = 0.0
        self._lock = threading.Lock()  # the intake records ACKs while the sender records texts

    def record(self, now: float, airtime_s: float) -> None:
        """Account one transmission that started at `now`."""
        with self._lock:
            self._entries.append((now, airtime_s))
            self._total += airtime_s

    def used(self, now: float) -> float:
        """Seconds on air within the last hour."""
        with self._lock:
            while self._entries and self._entries[0][0] <= now - DUTY_WINDOW_S:
                self._total -= self._entries.popleft()[1]
            return max(self._total, 0.0)


class Pacer:
    """When the next text may go, and how much of the hour's budget is left."""

    def __init__(self, modem: ModemPreset, min_gap_s: float, budget_s: float, region_s: float = DUTY_WINDOW_S) -> None:
        self.modem = modem
        # Never below the firmware's text rate limit (plus jitter margin), whatever the config says.
        self.min_gap_s = max(min_gap_s, limits.TEXT_RATE_LIMIT_S + limits.TEXT_RATE_LIMIT_MARGIN_S)
        self.budget_s = budget_s  # our texts' own share
        self.region_s = region_s  # everything the node sends, as the firmware counts it
        self.ledger: AirtimeRecorder = AirtimeLedger()  # our texts
        self.node_ledger = AirtimeLedger()  # what the node sends for us unasked: ACKs of DMs, retries
        self._ack_airtime = time_on_air_s(limits.ROUTING_ACK_FRAME_LEN, modem)
        # Retries may go out at a slower coding rate than the first send: count them at the slowest.
        self._retry_modem = dataclasses.replace(modem, cr=max(modem.cr, limits.RETRANSMIT_CODING_RATE))
        self._held_until = float("-inf")
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

    def airtime_of_ack(self) -> float:
        """Seconds on air of one routing ACK on this preset."""
        return self._ack_airtime

    def on_dm_received(self, now: float) -> None:
        """The node ACKs every DM to us on its own: that air time counts against its duty cycle."""
        self.node_ledger.record(now, self._ack_airtime)

    def on_node_retries(self, now: float, text: str, waited_s: float | None) -> int:
        """Account the retransmissions the node made on its own for a want-ACK text; how many.

        `waited_s` is how long its ACK took, None when the node gave up (MAX_RETRANSMIT) or
        never answered. The node sends again after at least twice the air time plus its
        processing time, so a slow ACK tells how many retries it took at most.
        """
        most = limits.MAX_RETRANSMIT - 1
        if waited_s is None:
            retries = most
        else:
            interval = 2 * self.airtime_of(text, reply_id=True) + limits.RETRANSMIT_PROCESSING_S
            retries = min(most, int(waited_s // interval))
        if retries:
            frame = limits.text_frame_len(len(text.encode("utf-8")), reply_id=True)
            self.node_ledger.record(now, retries * time_on_air_s(frame, self._retry_modem))
        return retries

    def on_duty_nak(self, now: float) -> None:
        """The node said DUTY_CYCLE_LIMIT: our estimate was short, so hold all texts for a while."""
        self._held_until = now + DUTY_NAK_HOLD_S

    def budget_left(self, now: float) -> float:
        """Seconds of air time our texts may still use in the rolling hour."""
        if now < self._held_until:
            return 0.0
        texts = self.ledger.used(now)
        own = self.budget_s - texts
        node = self.region_s * REGION_LIMIT_MARGIN - texts - self.node_ledger.used(now)
        return max(min(own, node), 0.0)

    def affordable_fragments(self, now: float, wanted: int, fragment_airtime_s: float, promised_s: float = 0.0) -> int:
        """How many full fragments fit in what is left of the budget, less `promised_s` already
        queued for sending (at most `wanted`)."""
        if fragment_airtime_s <= 0:
            return wanted
        left = self.budget_left(now) - promised_s
        return max(0, min(wanted, int(left // fragment_airtime_s)))
