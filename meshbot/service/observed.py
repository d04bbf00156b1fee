"""How a question's end is reported to the metrics seam (core/metrics.py), from the services' own records."""

from __future__ import annotations

from meshbot.core.metrics import QuestionSeen
from meshbot.service.queueing import Query


def seen(query: Query, outcome: str, now: float, fragments: int = 0, reason: str = "") -> QuestionSeen:
    """A queued question's end: who asked, over how many hops, how long since it arrived."""
    return QuestionSeen(
        outcome,
        query.node,
        query.inbound.hops,
        max(now - query.accepted_at, 0.0),
        fragments,
        query.decision.question,
        reason,
    )
