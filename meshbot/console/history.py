"""The console's history: one-minute buckets in a bounded ring, and the series the page plots from them.

Counts (air time, questions, ACKs) are added as they happen; levels (queue depth, channel utilisation,
nodes heard) are sampled every few seconds. A closed minute is handed back for the store, so the page
shows the last day again after a restart.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshbot.core.metrics import OUTCOMES, DeviceFigures, QuestionSeen

MINUTE_S = 60
_TTFF_PER_MINUTE = 60  # first-fragment times kept per minute (more in one minute would be a flood)
_QUESTIONS_PER_MINUTE = 20  # rows of the "last questions" table kept per minute
QUESTIONS_SHOWN = 30


@dataclass
class Minute:
    """What happened in one minute, and the last levels sampled in it."""

    minute: int  # epoch minutes
    airtime_s: float = 0.0
    fragments: int = 0
    tokens: int = 0
    acks: int = 0
    naks: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    ttff: list[float] = field(default_factory=list)
    queue_max: int = 0
    channel_util: float | None = None
    air_util_tx: float | None = None
    battery: float | None = None
    nodes_heard: int | None = None
    questions: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The minute as the store keeps it."""
        return {k: v for k, v in self.__dict__.items() if k != "minute"}

    @classmethod
    def from_json(cls, minute: int, data: dict[str, Any]) -> Minute:
        """A stored minute; unknown keys (a newer meshbot's) are ignored."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "minute"}
        try:
            return cls(minute, **known)
        except TypeError:
            return cls(minute)


class History:
    """The last `minutes` minutes, thread-safe; `series()` is what the page's JSON carries."""

    def __init__(self, minutes: int, show_text: bool = False) -> None:
        self._ring: deque[Minute] = deque(maxlen=minutes)
        self._lock = threading.Lock()
        self._show_text = show_text
        self._closed: list[Minute] = []

    def restore(self, minutes: Iterable[Minute]) -> None:
        """Put stored minutes back (oldest first), before any new one."""
        with self._lock:
            for m in minutes:
                if not self._ring or m.minute > self._ring[-1].minute:
                    self._ring.append(m)

    def _now(self, now: float) -> Minute:
        key = int(now // MINUTE_S)
        if self._ring and self._ring[-1].minute == key:
            return self._ring[-1]
        if self._ring and self._ring[-1].minute < key:
            self._closed.append(self._ring[-1])
        self._ring.append(Minute(key))
        return self._ring[-1]

    def take_closed(self) -> list[Minute]:
        """Minutes closed since the last call (for the store)."""
        with self._lock:
            closed, self._closed = self._closed, []
            return closed

    def current(self) -> Minute | None:
        """The minute being filled, if any."""
        with self._lock:
            return self._ring[-1] if self._ring else None

    def question(self, seen: QuestionSeen, now: float) -> None:
        """Count one question's end and keep its row for the table."""
        row = {
            "at": round(now, 1),
            "asker": seen.asker,
            "hops": seen.hops,
            "wait_s": None if seen.wait_s is None else round(seen.wait_s, 2),
            "fragments": seen.fragments,
            "outcome": seen.outcome,
            "reason": seen.reason,
        }
        if self._show_text:
            row["text"] = seen.text
        with self._lock:
            m = self._now(now)
            m.outcomes[seen.outcome] = m.outcomes.get(seen.outcome, 0) + 1
            if len(m.questions) < _QUESTIONS_PER_MINUTE:
                m.questions.append(row)

    def add(self, now: float, **counts: float) -> None:
        """Add to this minute's counts (airtime_s, fragments, tokens, acks, naks)."""
        with self._lock:
            m = self._now(now)
            for name, value in counts.items():
                setattr(m, name, getattr(m, name) + value)

    def first_fragment(self, seconds: float, now: float) -> None:
        """Keep one time to first fragment."""
        with self._lock:
            m = self._now(now)
            if len(m.ttff) < _TTFF_PER_MINUTE:
                m.ttff.append(round(seconds, 3))

    def sample(self, now: float, queue_depth: int, device: DeviceFigures | None, nodes_heard: int | None) -> None:
        """Record the levels seen now (the queue's deepest in the minute; the node's latest)."""
        with self._lock:
            m = self._now(now)
            m.queue_max = max(m.queue_max, queue_depth)
            if device is not None:
                m.channel_util = device.channel_utilization_percent
                m.air_util_tx = device.air_util_tx_percent
                m.battery = device.battery_percent
            if nodes_heard is not None:
                m.nodes_heard = nodes_heard

    def snapshot(self) -> list[Minute]:
        """A copy of the ring, oldest first."""
        with self._lock:
            return [Minute.from_json(m.minute, _copy(m.to_json())) for m in self._ring]

    def questions(self, show_text: bool) -> list[dict[str, Any]]:
        """The last questions, newest first; text only when the operator allows it."""
        rows: list[dict[str, Any]] = []
        with self._lock:
            for m in reversed(self._ring):
                rows.extend(reversed(m.questions))
                if len(rows) >= QUESTIONS_SHOWN:
                    break
        rows = [dict(r) for r in rows[:QUESTIONS_SHOWN]]
        if not show_text:
            for r in rows:
                r.pop("text", None)
        return rows


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in data.items()}


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def series(minutes: list[Minute]) -> dict[str, list[Any]]:
    """The page's plot data: one point per minute, with trailing windows where a chart wants a rate."""
    out: dict[str, list[Any]] = {
        name: []
        for name in (
            "t", "airtime_10m", "channel_util", "air_util_tx", "ttff_p50", "ttff_p95", "queue_depth",
            "acks", "naks", "nodes_heard", "fragments", "tokens", "battery",
            *(f"{o}_h" for o in OUTCOMES),
        )
    }  # fmt: skip
    for i, m in enumerate(minutes):
        ten = _window(minutes, i, 10)
        hour = _window(minutes, i, 60)
        ttffs = [t for w in ten for t in w.ttff]
        out["t"].append(m.minute * MINUTE_S)
        out["airtime_10m"].append(round(sum(w.airtime_s for w in ten), 2))
        out["ttff_p50"].append(percentile(ttffs, 50))
        out["ttff_p95"].append(percentile(ttffs, 95))
        for o in OUTCOMES:
            out[f"{o}_h"].append(sum(w.outcomes.get(o, 0) for w in hour))
        out["channel_util"].append(m.channel_util)
        out["air_util_tx"].append(m.air_util_tx)
        out["battery"].append(m.battery)
        out["nodes_heard"].append(m.nodes_heard)
        out["queue_depth"].append(m.queue_max)
        out["acks"].append(m.acks)
        out["naks"].append(m.naks)
        out["fragments"].append(m.fragments)
        out["tokens"].append(m.tokens)
    return out


def _window(minutes: list[Minute], end: int, width: int) -> list[Minute]:
    """The minutes within `width` minutes up to and including minutes[end] (the ring may have gaps)."""
    first = minutes[end].minute - width + 1
    out = []
    for j in range(end, -1, -1):
        if minutes[j].minute < first:
            break
        out.append(minutes[j])
    return out
