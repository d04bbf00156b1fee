"""Abuse limits: token buckets per node and for the whole bot, and allow/deny lists.

Pure: every method takes the time as a float; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from meshbot.core.events import Reason
from meshbot.core.ids import node_id, parse_node_id

log = logging.getLogger(__name__)

HOUR_S = 3600.0
# Float slack when comparing tokens, so waiting exactly `wait_s` then taking always succeeds.
_EPS = 1e-9


class TokenBucket:
    """Holds up to `burst` tokens, refilled continuously at `refill_per_s`; starts full."""

    def __init__(self, burst: float, refill_per_s: float, now: float) -> None:
        if burst <= 0 or refill_per_s < 0:
            raise ValueError(f"need burst > 0 and refill_per_s >= 0 (got {burst}, {refill_per_s})")
        self.burst = burst
        self.refill_per_s = refill_per_s
        self._tokens = float(burst)
        self._last = now

    def _refill(self, now: float) -> None:
        # A time earlier than the last one (a caller mixing clocks) adds nothing rather than going negative.
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.refill_per_s)
            self._last = now

    def tokens(self, now: float) -> float:
        """Tokens available at `now`."""
        self._refill(now)
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are that many; False (spending nothing) otherwise."""
        self._refill(now)
        if self._tokens < cost - _EPS:
            return False
        self._tokens = max(self._tokens - cost, 0.0)
        return True

    def wait_s(self, now: float, cost: float = 1.0) -> float:
        """Seconds from `now` until `take(cost)` would succeed; inf if it never can."""
        self._refill(now)
        missing = cost - self._tokens
        if missing <= _EPS:
            return 0.0
        if cost > self.burst or self.refill_per_s == 0:
            return math.inf
        return missing / self.refill_per_s

    def is_full(self, now: float) -> bool:
        """True when the bucket is back to `burst`: it then behaves exactly like a new one."""
        return self.tokens(now) >= self.burst


@dataclass(frozen=True)
class Verdict:
    """Whether one message may be answered."""

    allowed: bool
    reason: str = ""  # "node-rate" or "global-rate" when refused
    first_refusal: bool = False  # the first refusal of this node since its last allowed message
    retry_after_s: float = 0.0  # when refused: seconds until this node would be allowed again


@dataclass
class _NodeState:
    bucket: TokenBucket
    refusing: bool = False


class NodeLimiter:
    """Per-node buckets (burst, refill) plus one global bucket; forgets idle nodes (bounded memory)."""

    def __init__(
        self,
        per_node_burst: float,
        per_node_per_hour: float,
        global_burst: float,
        global_per_hour: float,
        max_nodes: int = 4096,
    ) -> None:
        if max_nodes < 1:
            raise ValueError(f"max_nodes must be at least 1 (got {max_nodes})")
        if per_node_burst < 1 or global_burst < 1:
            # A message costs one token: a smaller burst would refuse everyone forever.
            raise ValueError(f"bursts must be at least 1 (got {per_node_burst}, {global_burst})")
        self._node_burst = per_node_burst
        self._node_rate = per_node_per_hour / HOUR_S
        TokenBucket(per_node_burst, self._node_rate, 0.0)  # validate the per-node figures now, not later
        self._global_args = (global_burst, global_per_hour / HOUR_S)
        TokenBucket(*self._global_args, 0.0)
        self._global: TokenBucket | None = None  # made full at the first check's time
        self._max_nodes = max_nodes
        self._nodes: OrderedDict[int, _NodeState] = OrderedDict()  # least recently checked first

    def check(self, node: int, now: float) -> Verdict:
        """Spend one message from `node`'s bucket and the global one, or say which limit refused."""
        state = self._state(node, now)
        node_wait = state.bucket.wait_s(now)
        if node_wait > 0:
            return self._refuse(state, Reason.NODE_RATE, node_wait)
        if self._global is None:
            self._global = TokenBucket(*self._global_args, now)
        # Check the global bucket before spending either, so a refused message costs nothing.
        global_wait = self._global.wait_s(now)
        if global_wait > 0:
            return self._refuse(state, Reason.GLOBAL_RATE, global_wait)
        state.bucket.take(now)
        self._global.take(now)
        state.refusing = False
        return Verdict(True)

    def tracked_nodes(self) -> int:
        """Nodes currently remembered."""
        return len(self._nodes)

    def _refuse(self, state: _NodeState, reason: str, wait: float) -> Verdict:
        first = not state.refusing
        state.refusing = True
        return Verdict(False, reason, first, wait)

    def _state(self, node: int, now: float) -> _NodeState:
        state = self._nodes.pop(node, None)
        if state is None:
            state = _NodeState(TokenBucket(self._node_burst, self._node_rate, now))
        self._forget_idle(now)
        self._nodes[node] = state  # (re)inserted last: the most recently checked
        return state

    def _forget_idle(self, now: float) -> None:
        # A node whose bucket has refilled is the same as one never seen, so forgetting it loses
        # nothing. The least recently checked nodes are the likeliest to be full; stop at the first not.
        while self._nodes:
            oldest = next(iter(self._nodes.values()))
            if not oldest.bucket.is_full(now):
                break
            self._nodes.popitem(last=False)
        # Past the cap (many distinct ids within one refill period) forget the stalest even if not
        # full: memory stays bounded, and the global bucket still limits the total.
        while len(self._nodes) >= self._max_nodes:
            node, _ = self._nodes.popitem(last=False)
            log.debug("rate limiter full: forgetting %s early", node_id(node))


class AccessList:
    """Which nodes the bot serves: deny wins; an empty allow list means everyone."""

    def __init__(self, allow: Iterable[str | int] = (), deny: Iterable[str | int] = ()) -> None:
        self._allow = frozenset(parse_node_id(v) for v in allow)
        self._deny = frozenset(parse_node_id(v) for v in deny)

    def permits(self, node: int) -> bool:
        """True when the bot may answer `node`."""
        if node in self._deny:
            return False
        return not self._allow or node in self._allow


class ChannelCooldown:
    """Per-channel quiet time: after a question is taken on a channel, others wait `cooldown_s`."""

    def __init__(self) -> None:
        self._until: dict[int, float] = {}

    def remaining(self, channel: int, now: float) -> float:
        """Seconds until the channel takes another question (0: it may now)."""
        return max(self._until.get(channel, 0.0) - now, 0.0)

    def start(self, channel: int, cooldown_s: float, now: float) -> None:
        """A question was taken on `channel` now."""
        if cooldown_s > 0:
            self._until[channel] = now + cooldown_s
