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
from meshbot.core.trust import admins_of, is_admin


class Admin(enum.Enum):
    """Commands an admin node may send by DM."""

    PAUSE = "!pause"
    RESUME = "!resume"
    STATS = "!stats"
    REKEY = "!rekey"  # "!rekey !a1b2c3d4": forget that node's pinned key; its next NodeInfo is believed


class Spend(enum.Enum):
    """Which allowance a message spends once it passes the access and loop checks."""

    QUESTION = "question"  # a new question: repeats and the per-node question rate apply
    COMMAND = "command"  # a command or "more": the separate command allowance
    NOTHING = "nothing"  # a later part of a question already admitted


DEFAULT_AI_TAG = "🤖"


def is_bot_text(text: str, tags: tuple[str, ...]) -> bool:
    """True when a text is another bot's: it starts with an AI tag, or carries the "more" invitation."""
    # A bare numbering like "2/2 ..." or "1/+ ..." is NOT a bot sign: people number the parts of long
    # questions. The rule is `looks_like_meshbot_output`'s with a tag: the tag, or the "more" invitation.
    return any(looks_like_meshbot_output(text, 0, tag) for tag in tags if tag)


@dataclass(frozen=True)
class Refused:
    """Not answered: `reason` for the log, and a one-time `notice` for the node, if any."""

    reason: str
    notice: str | None = None


def admin_command(text: str) -> Admin | None:
    """The admin command a text is, if it is exactly one (`!rekey` with its one argument)."""
    words = text.strip().casefold().split()
    if len(words) == 2 and words[0] == Admin.REKEY.value:
        return Admin.REKEY
    word = " ".join(words)
    return next((cmd for cmd in Admin if word == cmd.value and cmd is not Admin.REKEY), None)


class Limiter(Protocol):
    """Spends one message of a node's (and the global) allowance: core.ratelimit.NodeLimiter or a shared one."""

    def check(self, node: int, now: float) -> Verdict: ...


class Gate:
    """Checks run on every accepted question, in the order an operator reads the reasons."""

    def __init__(
        self,
        cfg: LimitsConfig,
        recent_text_seen: Callable[[int, str, float], bool],
        *,
        bot_tags: tuple[str, ...] = (DEFAULT_AI_TAG,),
        command_rate: tuple[float, float] = (6, 60),
    ) -> None:
        self._cfg = cfg
        self._bot_tags = tuple(t.strip() for t in bot_tags if t.strip())
        self._commands = NodeLimiter(*command_rate, cfg.global_burst, cfg.global_per_hour)
        self._recent_text_seen = recent_text_seen  # (node, text, window_s): seen lately, and remember it
        self._access = AccessList(cfg.allow, cfg.deny)
        self._bots = frozenset(parse_node_id(i) for i in cfg.bots)
        self._admins = admins_of(cfg.admins)
        self._limiter: Limiter = NodeLimiter(
            cfg.per_node_burst, cfg.per_node_per_hour, cfg.global_burst, cfg.global_per_hour
        )

    def share_limits(self, limiter: Limiter) -> None:
        """Use rate limits shared with other workers of the same bot (meshbot.cluster) instead of our own."""
        self._limiter = limiter

    def check(
        self, msg: Inbound, decision: Accept, now: float, spend: Spend = Spend.QUESTION
    ) -> Refused | Admin | None:
        """None to answer; an Admin command to run; or why it is refused."""
        if not self._access.permits(msg.sender):
            return Refused(Reason.DENIED)
        if msg.sender in self._bots or is_bot_text(decision.question, self._bot_tags):
            return Refused(Reason.OTHER_BOT)
        command = admin_command(decision.question)
        if command is not None:
            # Only an admin's own PKI-proven DM runs a command: a channel-key DM can carry any `from`.
            if is_admin(msg, self._admins):
                return command
            return Refused(Reason.UNPROVEN if msg.sender in self._admins else Reason.ADMIN_ONLY)
        if spend is Spend.NOTHING:
            return None
        if spend is Spend.COMMAND:
            return self._rate(self._commands, msg.sender, now)
        if (
            decision.kind is Kind.ASK
            and self._cfg.repeat_window_s > 0
            and self._recent_text_seen(msg.sender, decision.question.casefold(), self._cfg.repeat_window_s)
        ):
            return Refused(Reason.REPEAT)
        return self._rate(self._limiter, msg.sender, now)

    def _rate(self, limiter: Limiter, node: int, now: float) -> Refused | None:
        verdict = limiter.check(node, now)
        if verdict.allowed:
            return None
        notice = None
        if verdict.first_refusal and verdict.reason == "node-rate":
            minutes = max(1, math.ceil(verdict.retry_after_s / 60))
            notice = self._cfg.notice.format(minutes=minutes)
        return Refused(verdict.reason, notice)
