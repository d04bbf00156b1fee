"""Conversation memory in the shared store: whichever worker gets a follow-up, it is asked with the same history.

The same interface as the worker's own table (storage.memory.MemoryTable; service.memory.MemoryTables), with
the same bounds. Keys, under the bot's `mb:<group>:` prefix:
- `mem:<node>:<channel>`: the conversation, a list of JSON exchanges, oldest first; at most `keep` (LTRIM), and
  it expires as a whole once idle for `idle_s` (PEXPIRE, restarted by every exchange added);
- `mem-asked:<sender>:<packet id>`: the history a started question was asked with, until it is answered. Keyed by
  the asking packet, not the local query id: a question taken over by another worker has a new id there;
- `mem-added:<sender>:<packet id>`: the question's exchange is remembered, so an answer written again after a
  takeover is not remembered twice.
Memory is a nicety: with Redis away every call returns what an empty memory would (one WARNING when that
starts, `memory-back` when it ends), and for `retry_s` after a failure Redis is not asked at all, so a
store that times out does not hold up every answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import redis

from meshbot.cluster.shared import Shared
from meshbot.core.events import Event
from meshbot.storage.memory import Asked, Exchange, Snapshot, channel_key, exchange_of, exchange_row

log = logging.getLogger(__name__)

T = TypeVar("T")

ASKED_KEEP_S = 6 * 3600.0  # a snapshot outlives any lease and any question's time in a queue by far
RETRY_S = 10.0  # after a failure, answer without memory this long before asking Redis again

# KEYS: conversation, snapshot, "added" mark. ARGV: exchange JSON, keep, idle ms, mark ms.
# One script, so a crash never leaves the exchange marked but not added, or added twice.
_ADD = """
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) then return 0 end
redis.call('DEL', KEYS[2])
local keep = tonumber(ARGV[2])
if keep <= 0 then return 1 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -keep, -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class SharedMemory:
    """Conversation memory every worker of the bot reads and writes."""

    def __init__(self, shared: Shared, asked_keep_s: float = ASKED_KEEP_S, retry_s: float = RETRY_S) -> None:
        self._shared = shared
        self._r = shared.r
        self._add = shared.r.register_script(_ADD)
        self._asked_keep_ms = _ms(asked_keep_s)
        self._retry_s = retry_s
        self._failed_at: float | None = None  # monotonic time of the last failure; None while Redis answers
        self._lock = threading.Lock()

    def now(self) -> float:
        """Wall-clock epoch seconds: the workers' clocks are what `Exchange.at` compares."""
        return time.time()

    def recent(self, node: int, channel: int | None, limit: int) -> list[Exchange]:
        """The conversation's newest `limit` exchanges, oldest first."""
        if limit <= 0:
            return []
        key = self._conversation(node, channel)
        rows: list[bytes] = self._call("read", lambda: self._r.lrange(key, -limit, -1), [])
        return [exchange_of(json.loads(row)) for row in rows]

    def add(self, node: int, channel: int | None, asked: Asked, exchange: Exchange, keep: int, idle_s: float) -> None:
        """Remember an answered exchange (once per question), keep the newest `keep`, and restart the idle clock."""
        row = json.dumps(exchange_row(exchange), ensure_ascii=False)
        keys = [self._conversation(node, channel), self._asked(asked), self._shared.key("mem-added", *_packet(asked))]
        self._call("write", lambda: self._add(keys=keys, args=[row, keep, _ms(idle_s), self._asked_keep_ms]), 0)

    def forget(self, node: int, channel: int | None) -> int:
        """Delete the conversation; returns how many exchanges it had (0 with Redis away)."""
        key = self._conversation(node, channel)

        def run() -> int:
            pipe = self._r.pipeline()  # MULTI: the count is of what was deleted
            pipe.llen(key)
            pipe.delete(key)
            return int(pipe.execute()[0])

        return self._call("forget", run, 0)

    def save_snapshot(self, asked: Asked, node: int, channel: int | None, history: Sequence[Exchange]) -> None:
        """Keep the history question `asked` is being asked with (the first snapshot wins, on any worker)."""
        rows = [exchange_row(e) for e in history]
        body = json.dumps({"node": node, "channel": channel_key(channel), "history": rows}, ensure_ascii=False)
        self._call("write", lambda: self._r.set(self._asked(asked), body, nx=True, px=self._asked_keep_ms), None)

    def snapshot(self, asked: Asked) -> Snapshot | None:
        """The conversation and history question `asked` started with, if it started and is not answered."""
        raw = self._call("read", lambda: self._r.get(self._asked(asked)), None)
        if raw is None:
            return None
        data = json.loads(raw)
        return Snapshot(int(data["node"]), int(data["channel"]), tuple(exchange_of(r) for r in data["history"]))

    def _conversation(self, node: int, channel: int | None) -> str:
        return self._shared.key("mem", node, channel_key(channel))

    def _asked(self, asked: Asked) -> str:
        return self._shared.key("mem-asked", *_packet(asked))

    def _call(self, what: str, op: Callable[[], T], fallback: T) -> T:
        """`op()`, or `fallback` when Redis fails or failed less than `retry_s` ago."""
        with self._lock:
            resting = self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_s
        if resting:
            return fallback
        try:
            result = op()
        except redis.RedisError as exc:
            self._failed(what, exc)
            return fallback
        self._answered()
        return result

    def _failed(self, what: str, exc: redis.RedisError) -> None:
        with self._lock:
            first = self._failed_at is None
            self._failed_at = time.monotonic()
        if not first:
            log.debug("conversation memory: %s failed again: %s", what, exc)
            return
        log.warning(
            "conversation memory: shared store unreachable (%s failed: %s): answering without history until it is back",
            what,
            exc,
            extra={"event": Event.MEMORY_UNAVAILABLE},
        )

    def _answered(self) -> None:
        with self._lock:
            was_down, self._failed_at = self._failed_at is not None, None
        if was_down:
            log.info("conversation memory: shared store back", extra={"event": Event.MEMORY_BACK})


def _packet(asked: Asked) -> tuple[int, int]:
    """The question's identity on every worker: (sender, packet id), as in the work log."""
    return asked.sender, asked.packet_id
