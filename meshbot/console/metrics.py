"""The Prometheus side of the metrics seam: counters the services move, gauges read at each scrape.

Names follow Prometheus conventions (a `meshbot_` prefix, base units, `_total` counters, bounded labels).
With several workers ([cluster]), each worker's own figures carry a `worker` label; the figures the
workers share (the bot's air time in the hour and its budget, the mesh's nodes) carry none: every worker
reports the same value, so a dashboard takes max() of them, never sum().
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from meshbot.console.history import History
from meshbot.core.metrics import OUTCOMES, QuestionSeen

# Seconds from "the worker took it" to "its first fragment is ready": a small model on a Pi takes 1-20 s.
TTFF_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0)
NODE_WINDOWS = {"1h": 3600.0, "24h": 86400.0}  # meshbot_nodes_heard{window}
# NAK reasons are Routing error names plus TIMEOUT; anything else is counted as OTHER, so the label stays bounded.
NAK_REASONS = frozenset(
    {
        "TIMEOUT", "MAX_RETRANSMIT", "NO_RESPONSE", "NO_ROUTE", "GOT_NAK", "NO_INTERFACE", "NO_CHANNEL",
        "TOO_LARGE", "DUTY_CYCLE_LIMIT", "RATE_LIMIT_EXCEEDED", "BAD_REQUEST", "NOT_AUTHORIZED",
        "PKI_FAILED", "PKI_UNKNOWN_PUBKEY", "ADMIN_BAD_SESSION_KEY", "ADMIN_PUBLIC_KEY_UNAUTHORIZED",
        "PKI_SEND_FAIL_PUBLIC_KEY", "SEND_ERROR", "RADIO_DOWN",
    }
)  # fmt: skip


class ConsoleMetrics:
    """Implements core.metrics.Metrics: Prometheus counters plus the console's minute history."""

    def __init__(self, history: History, worker: str | None = None, wall: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.history = history
        self._wall = wall
        own = ("worker",) if worker else ()
        self._own: dict[str, str] = {"worker": worker} if worker else {}
        reg = self.registry
        self._questions = Counter("meshbot_questions", "Questions by how they ended", ("outcome", *own), registry=reg)
        self._ttff = Histogram(
            "meshbot_first_fragment_seconds",
            "Seconds from taking a question to its first fragment",
            own,
            buckets=TTFF_BUCKETS,
            registry=reg,
        )
        self._fragments = Counter("meshbot_answer_fragments", "Answer fragments put on air", own, registry=reg)
        self._airtime = Counter("meshbot_airtime_seconds", "Seconds on air of the bot's texts", own, registry=reg)
        self._acks = Counter("meshbot_acks", "Texts acknowledged (ACK or implicit ACK)", own, registry=reg)
        self._naks = Counter(
            "meshbot_naks", "Texts refused or unacknowledged, by reason", ("reason", *own), registry=reg
        )
        self._tokens = Counter("meshbot_model_tokens", "Tokens the model wrote", own, registry=reg)
        self.queue_depth = Gauge("meshbot_queue_depth", "Questions waiting for the model", own, registry=reg)
        self.radio_up = Gauge("meshbot_radio_up", "1 while the radio link is up", own, registry=reg)
        # Shared by all workers of one bot: no worker label (see the module's docstring).
        self.airtime_budget = Gauge(
            "meshbot_airtime_budget_seconds", "Seconds of air time the bot's texts may use per hour", registry=reg
        )
        self.airtime_hour = Gauge(
            "meshbot_airtime_hour_seconds", "Seconds on air of the bot's texts in the last hour", registry=reg
        )
        self.nodes_heard = Gauge("meshbot_nodes_heard", "Nodes heard within the window", ("window",), registry=reg)
        self.battery = Gauge("meshbot_node_battery_percent", "The bot node's battery (101: on power)", registry=reg)
        self.channel_util = Gauge(
            "meshbot_node_channel_utilization_percent", "Air time in use as the bot node hears it", registry=reg
        )
        self.air_util_tx = Gauge(
            "meshbot_node_air_util_tx_percent", "Share of the last hour the bot node transmitted", registry=reg
        )
        for outcome in OUTCOMES:  # all four exist from the start, so rate() sees the first one
            self._questions.labels(outcome=outcome, **self._own)
        self._naks.labels(reason="TIMEOUT", **self._own)

    def _m(self, metric: Any, **labels: str) -> Any:
        return metric.labels(**labels, **self._own) if (labels or self._own) else metric

    def question(self, seen: QuestionSeen) -> None:
        """A question ended."""
        outcome = seen.outcome if seen.outcome in OUTCOMES else "failed"
        self._m(self._questions, outcome=outcome).inc()
        self.history.question(seen, self._wall())

    def first_fragment(self, seconds: float) -> None:
        """An answer's first fragment was ready."""
        self._m(self._ttff).observe(seconds)
        self.history.first_fragment(seconds, self._wall())

    def on_air(self, airtime_s: float, *, fragment: bool) -> None:
        """A text went on air."""
        self._m(self._airtime).inc(airtime_s)
        if fragment:
            self._m(self._fragments).inc()
        self.history.add(self._wall(), airtime_s=airtime_s, fragments=int(fragment))

    def ack(self) -> None:
        """A text was acknowledged."""
        self._m(self._acks).inc()
        self.history.add(self._wall(), acks=1)

    def nak(self, reason: str) -> None:
        """A text was refused or timed out."""
        self._m(self._naks, reason=reason if reason in NAK_REASONS else "OTHER").inc()
        self.history.add(self._wall(), naks=1)

    def tokens(self, count: int) -> None:
        """The model wrote `count` tokens."""
        self._m(self._tokens).inc(count)
        self.history.add(self._wall(), tokens=count)

    def own(self, metric: Any) -> Any:
        """`metric` with this worker's label, if it has one (for the console's gauges)."""
        return self._m(metric)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
