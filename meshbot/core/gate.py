"""Admission beyond policy: who may use the bot, other bots, repeats, rate limits, admin commands.

Policy decides whether a packet is a question for us; the gate decides whether this node may
have it answered now. Pure: the memory of repeats comes in as a callable (the store's, in the daemon).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from meshbot.core.config import LimitsConfig
from meshbot.core.domain import Inbound
from meshbot.core.events import Reason
from meshbot.core.fragmenter import looks_like_meshbot_output
from meshbot.core.ids import parse_node_id
from meshbot.core.policy import Accept, Kind
from meshbot.core.ratelimit import AccessList, NodeLimiter, Verdict


class Admin(enum.Enum):
    """Commands an admin node may send by DM."""

    PAUSE = "!pause"
    RESUME = "!resume"
    STATS = "!stats"


@dataclass(frozen=True)
class Refused:
    """Not answered: `reason` for the log, and a one-time `notice` for the node, if any."""

    reason: str
    notice: str | None = None


def admin_command(text: str) -> Admin | None:
    """The admin command a text is, if it is exactly one."""
    word = text.strip().casefold()
    return next((cmd for cmd in Admin if word == cmd.value), None)


class Limiter(Protocol):
    """Spends one message of a node's (and the global) allowance: core.ratelimit.NodeLimiter or a shared one."""

    def check(self, node: int, now: float) -> Verdict: ...


class Gate:
    """Checks run on every accepted question, in the order an operator reads the reasons."""

    def __init__(
        self,
        cfg: LimitsConfig,
        recent_text_seen: Callable[[int, str, float], bool],
        fragment_budget: int,
        bot_tag: str = "",
    ) -> None:
        self._cfg = cfg
        # What marks another meshbot's output (see `looks_like_meshbot_output`): its cut size and its tag.
        self._fragment_budget = fragment_budget
        self._bot_tag = bot_tag
        self._recent_text_seen = recent_text_seen  # (node, text, window_s): seen lately, and remember it
        self._access = AccessList(cfg.allow, cfg.deny)
        self._bots = frozenset(parse_node_id(i) for i in cfg.bots)
        self._admins = frozenset(parse_node_id(i) for i in cfg.admins)
        self._limiter: Limiter = NodeLimiter(
            cfg.per_node_burst, cfg.per_node_per_hour, cfg.global_burst, cfg.global_per_hour
        )

    def share_limits(self, limiter: Limiter) -> None:
        """Use rate limits shared with other workers of the same bot (meshbot.cluster) instead of our own."""
        self._limiter = limiter

    def check(self, msg: Inbound, decision: Accept, now: float) -> Refused | Admin | None:
        """None to answer; an Admin command to run; or why it is refused."""
        if not self._access.permits(msg.sender):
            return Refused(Reason.DENIED)
        if msg.sender in self._bots or looks_like_meshbot_output(
            decision.question, self._fragment_budget, self._bot_tag
        ):
            return Refused(Reason.OTHER_BOT)
        command = admin_command(decision.question)
        if command is not None:
            # Only an admin's own DM runs a command; anyone else's (or a channel's) does nothing.
            if msg.is_dm and msg.sender in self._admins:
                return command
            return Refused(Reason.ADMIN_ONLY)
        if (
            decision.kind is Kind.ASK
            and self._cfg.repeat_window_s > 0
            and self._recent_text_seen(msg.sender, decision.question.casefold(), self._cfg.repeat_window_s)
        ):
            return Refused(Reason.REPEAT)
        return self._rate(msg.sender, now)

    def _rate(self, node: int, now: float) -> Refused | None:
        verdict = self._limiter.check(node, now)
        if verdict.allowed:
            return None
        notice = None
        if verdict.first_refusal and verdict.reason == "node-rate":
            minutes = max(1, math.ceil(verdict.retry_after_s / 60))
            notice = self._cfg.notice.format(minutes=minutes)
        return Refused(verdict.reason, notice)
