"""Limits that hold for the bot, not per worker: per-node and global rate limits, and the region's air time.

Both are computed inside Redis (Lua scripts, on Redis's own clock), so two workers checking at once see
one bucket and one hour of air time. They plug into the same seams the single worker uses: the gate's
limiter (core.ratelimit.NodeLimiter's `check`) and the pacer's air-time ledger (core.pacing.AirtimeLedger).
"""

from __future__ import annotations

import logging
import secrets

import redis

from meshbot.cluster.shared import Shared
from meshbot.core.config import LimitsConfig
from meshbot.core.events import Event
from meshbot.core.pacing import DUTY_WINDOW_S, AirtimeLedger
from meshbot.core.ratelimit import HOUR_S, NodeLimiter, Verdict

log = logging.getLogger(__name__)

# KEYS: node bucket, global bucket, node's "refusing" flag. ARGV: node burst, node rate/s, global burst,
# global rate/s. A bucket is a hash {t: tokens, at: seconds}; a refused message costs nothing.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local function level(key, burst, rate)
  local v = redis.call('HMGET', key, 't', 'at')
  local t = tonumber(v[1]) or burst
  local at = tonumber(v[2]) or now
  return math.min(burst, t + math.max(now - at, 0) * rate)
end
local function wait(t, rate)
  if rate <= 0 then return 3600 end
  return (1 - t) / rate
end
local nb, nr, gb, gr = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local nt = level(KEYS[1], nb, nr)
local gt = level(KEYS[2], gb, gr)
local reason, after = nil, 0
if nt < 1 then reason, after = 'node-rate', wait(nt, nr)
elseif gt < 1 then reason, after = 'global-rate', wait(gt, gr) end
if reason then
  local first = redis.call('SET', KEYS[3], '1', 'NX', 'EX', 3600) and 1 or 0
  return {0, reason, first, tostring(after)}
end
redis.call('HSET', KEYS[1], 't', tostring(nt - 1), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 7200)
redis.call('HSET', KEYS[2], 't', tostring(gt - 1), 'at', tostring(now))
redis.call('DEL', KEYS[3])
return {1, '', 0, '0'}
"""

# KEYS: the region's sorted set of transmissions (member "<id>:<seconds>", score = start).
# ARGV: window seconds, then optionally the air time to record now.
_AIRTIME = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
if ARGV[2] then
  redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. ARGV[2])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 60)
end
local total = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + tonumber(string.match(m, ':([^:]+)$'))
end
return tostring(total)
"""


class _Outage:
    """One error line when Redis goes away (not one per packet or fragment), reset once it answers again."""

    def __init__(self, what: str) -> None:
        self._what = what
        self.away = False

    def report(self, exc: redis.RedisError) -> None:
        """Redis failed a call: say so, once per outage."""
        if not self.away:
            log.error("cluster: %s (%s) until Redis is back", self._what, exc, extra={"event": Event.CLUSTER_ERROR})
        self.away = True

    def answered(self) -> None:
        """Redis answered: the next failure is a new outage."""
        self.away = False


class SharedLimiter:
    """The gate's rate limiter, one set of buckets for all workers (same figures as `[limits]`)."""

    def __init__(self, shared: Shared, cfg: LimitsConfig) -> None:
        self._shared = shared
        self._args = (
            cfg.per_node_burst,
            cfg.per_node_per_hour / HOUR_S,
            cfg.global_burst,
            cfg.global_per_hour / HOUR_S,
        )
        self._take = shared.r.register_script(_TAKE)
        # With Redis away, this worker's own buckets (same figures) decide: a question is never lost to
        # a limiter that cannot be asked, and a flood is still held back.
        self._own = NodeLimiter(cfg.per_node_burst, cfg.per_node_per_hour, cfg.global_burst, cfg.global_per_hour)
        self._outage = _Outage("rate limits not shared: this worker's own limits apply")

    def check(self, node: int, now: float) -> Verdict:
        """Spend one message from `node`'s bucket and the global one, or say which limit refused."""
        k = self._shared.key
        try:
            allowed, reason, first, after = self._take(
                keys=[k("rate", node), k("rate", "global"), k("refusing", node)], args=list(self._args)
            )
        except redis.RedisError as exc:
            self._outage.report(exc)
            return self._own.check(node, now)
        self._outage.answered()
        if allowed:
            return Verdict(True)
        return Verdict(False, reason.decode(), bool(first), float(after))


class SharedAirtime:
    """The pacer's air-time ledger for the whole region: every worker's transmissions in the last hour."""

    def __init__(self, shared: Shared, region: str) -> None:
        self._key = shared.key("airtime", region)
        self._script = shared.r.register_script(_AIRTIME)
        # This worker's own share, kept as well: with Redis away the budget falls back to it rather than
        # failing the answer (the other workers' share is then not counted).
        self._own = AirtimeLedger()
        self._outage = _Outage("air time not shared: counting this worker's own")

    def record(self, now: float, airtime_s: float) -> None:
        """Account one transmission that started now (Redis's clock: workers' monotonic clocks differ)."""
        self._own.record(now, airtime_s)
        try:
            self._script(keys=[self._key], args=[DUTY_WINDOW_S, repr(airtime_s), secrets.token_hex(6)])
        except redis.RedisError as exc:
            self._outage.report(exc)

    def used(self, now: float) -> float:
        """Seconds on air within the last hour, all workers together (only this one's with Redis away)."""
        try:
            total = float(self._script(keys=[self._key], args=[DUTY_WINDOW_S]))
        except redis.RedisError as exc:
            self._outage.report(exc)
            return self._own.used(now)
        self._outage.answered()
        return total
