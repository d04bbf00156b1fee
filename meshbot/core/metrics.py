"""The metrics seam: what the daemon tells an operator's console as it works (no I/O here).

The services call a `Metrics` where their log events fire; `NO_METRICS` (the default) does nothing, and
`meshbot.console.metrics.ConsoleMetrics` counts for Prometheus and the console page. Figures about the
mesh itself (nodes heard, the bot node's device metrics) are read, not pushed: through `NodeFigures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# meshbot_questions_total{outcome}: the only values the label takes.
OUTCOMES = ("answered", "refused", "dropped", "failed")


@dataclass(frozen=True)
class QuestionSeen:
    """One question's end, as the console's table shows it (the text only when the operator allows it)."""

    outcome: str  # one of OUTCOMES
    asker: int
    hops: int | None = None
    wait_s: float | None = None  # from its arrival to the end of its answer (or its refusal)
    fragments: int = 0
    text: str = ""
    reason: str = ""


@dataclass(frozen=True)
class DeviceFigures:
    """The bot node's own device metrics, as its last telemetry reported them (None: not reported)."""

    battery_percent: float | None = None
    channel_utilization_percent: float | None = None
    air_util_tx_percent: float | None = None


class Metrics(Protocol):
    """What the daemon's services report; every call is cheap and never raises."""

    def question(self, seen: QuestionSeen) -> None:
        """A question ended: answered, refused, dropped or failed."""

    def first_fragment(self, seconds: float) -> None:
        """An answer's first fragment was ready this long after the worker took the question."""

    def on_air(self, airtime_s: float, *, fragment: bool) -> None:
        """A text went on air (`fragment`: a piece of an answer, not a notice)."""

    def ack(self) -> None:
        """A text was acknowledged (ACK or implicit ACK)."""

    def nak(self, reason: str) -> None:
        """A text was refused (a Routing error name) or timed out ("TIMEOUT")."""

    def tokens(self, count: int) -> None:
        """The model wrote this many tokens."""


class NodeFigures(Protocol):
    """What the console reads from the node directory."""

    def nodes_heard(self, window_s: float) -> int:
        """Nodes heard within the last `window_s` seconds."""

    def own_device(self) -> DeviceFigures | None:
        """The bot node's device metrics, or None before its first telemetry."""


class NoMetrics:
    """The default: tells nobody."""

    def question(self, seen: QuestionSeen) -> None:
        """Nothing."""

    def first_fragment(self, seconds: float) -> None:
        """Nothing."""

    def on_air(self, airtime_s: float, *, fragment: bool) -> None:
        """Nothing."""

    def ack(self) -> None:
        """Nothing."""

    def nak(self, reason: str) -> None:
        """Nothing."""

    def tokens(self, count: int) -> None:
        """Nothing."""


NO_METRICS: Metrics = NoMetrics()
