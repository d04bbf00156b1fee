"""The shared work log: every accepted question, its fragments and who holds it, in Redis.

A question is a hash `q:<sender>:<packet id>` (the question, how to reply, its seed, each fragment's text
`f:<i>` and, once handed to the broker, `p:<i>`) and an entry in the stream `work`, read through the
consumer group `workers`: the entry is pending, owned by the worker that accepted it, until that worker
closes it (XACK). The owner renews its entries; one idle for a whole lease belongs to a silent worker and
any worker may take it (XAUTOCLAIM). A worker shutting down pushes its entries on the list `returned`,
from which the others take them at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from meshbot.cluster.shared import Shared

GROUP = "workers"

# Add the entry and deliver it to the accepting worker in one step, so no other worker's read can take it.
_ENQUEUE = """
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
local id = redis.call('XADD', KEYS[1], '*', 'q', KEYS[2])
redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
redis.call('HSET', KEYS[2], 'entry', id)
return id
"""

# Renew (reset the idle time of) each entry still owned by this worker; return those it no longer owns.
_RENEW = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# Take one handed-back entry, only if the worker that handed it back still owns it (nobody took it since).
_TAKE_RETURNED = """
local item = redis.call('LPOP', KEYS[2])
if not item then return false end
local sep = string.find(item, '|', 1, true)
local id, owner = string.sub(item, 1, sep - 1), string.sub(item, sep + 1)
local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
if p[1] and p[1][2] == owner then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  return id
end
return ''
"""


@dataclass(frozen=True)
class Held:
    """A question held in the work log: its hash key and stream entry."""

    qkey: str
    entry: str


@dataclass(frozen=True)
class Record:
    """What a worker taking a question over reads back."""

    held: Held
    fields: dict[str, str]
    fragments: dict[int, str]
    published: frozenset[int]
    generation_done: bool


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class WorkLog:
    """One worker's view of the shared work log."""

    def __init__(self, shared: Shared, lease_s: float) -> None:
        self._shared = shared
        self._r = shared.r
        self._me = shared.worker_id
        self._stream = shared.key("work")
        self._returned = shared.key("returned")
        self._lease_ms = int(lease_s * 1000)
        self._enqueue = self._r.register_script(_ENQUEUE)
        self._renew = self._r.register_script(_RENEW)
        self._take_returned = self._r.register_script(_TAKE_RETURNED)

    def ensure_group(self) -> None:
        """Create the stream and its consumer group if this is the first worker."""
        try:
            self._r.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def qkey(self, sender: int, packet_id: int) -> str:
        """The hash key of the question (sender, packet id)."""
        return self._shared.key("q", sender, packet_id)

    def exists(self, sender: int, packet_id: int) -> bool:
        """True while the question (sender, packet id) is open in the work log."""
        return bool(self._r.exists(self.qkey(sender, packet_id)))

    def enqueue(self, qkey: str, fields: dict[str, str]) -> Held:
        """Keep the question and make this worker its owner."""
        flat = [x for kv in fields.items() for x in kv]
        entry = self._enqueue(keys=[self._stream, qkey], args=[GROUP, self._me, *flat])
        return Held(qkey, _s(entry))

    def fragment(self, held: Held, index: int, text: str) -> None:
        """Keep fragment `index` (before it can reach the broker)."""
        self._r.hset(held.qkey, f"f:{index}", text)

    def published(self, held: Held, index: int) -> None:
        """Fragment `index` went to the broker: a worker taking over must not send it again."""
        self._r.hset(held.qkey, f"p:{index}", "1")

    def generated(self, held: Held) -> None:
        """Every fragment of the answer is kept."""
        self._r.hset(held.qkey, "done", "1")

    def finish(self, held: Held) -> None:
        """The question is closed: nobody needs to take it over."""
        pipe = self._r.pipeline()
        pipe.xack(self._stream, GROUP, held.entry)
        pipe.xdel(self._stream, held.entry)
        pipe.delete(held.qkey)
        pipe.execute()

    def renew(self, held: list[Held]) -> set[str]:
        """Renew this worker's lease on `held`; the entries it lost to another worker."""
        if not held:
            return set()
        lost = self._renew(keys=[self._stream], args=[GROUP, self._me, *(h.entry for h in held)])
        return {_s(e) for e in lost}

    def hand_back(self, held: list[Held]) -> None:
        """Offer these entries to the other workers now (a graceful stop)."""
        if held:
            self._r.rpush(self._returned, *(f"{h.entry}|{self._me}" for h in held))

    def take_returned(self, limit: int) -> list[str]:
        """Entries a stopping worker handed back, now ours."""
        taken = []
        for _ in range(limit):
            entry = self._take_returned(keys=[self._stream, self._returned], args=[GROUP, self._me])
            if entry is None:
                break
            if entry:
                taken.append(_s(entry))
        return taken

    def take_dead(self, limit: int) -> list[str]:
        """Entries idle for a whole lease (their worker is silent), now ours."""
        ids = self._r.xautoclaim(self._stream, GROUP, self._me, self._lease_ms, "0-0", count=limit, justid=True)
        return [_s(e) for e in ids]  # with justid, redis-py hands back just the claimed ids

    def take_mine(self) -> list[str]:
        """Entries this worker id still owns from before a restart."""
        pending = self._r.xpending_range(self._stream, GROUP, "-", "+", 1000, consumername=self._me)
        return [_s(p["message_id"]) for p in pending]

    def load(self, entry: str) -> Record | None:
        """The question behind `entry`, or None when it is gone (then the entry is closed)."""
        rows = self._r.xrange(self._stream, entry, entry)
        qkey = _s(rows[0][1][b"q"]) if rows else None
        raw = self._r.hgetall(qkey) if qkey else {}
        if not raw or qkey is None:
            self._r.xack(self._stream, GROUP, entry)
            return None
        fields = {_s(k): _s(v) for k, v in raw.items()}
        frags = {int(k[2:]): v for k, v in fields.items() if k.startswith("f:")}
        published = frozenset(int(k[2:]) for k in fields if k.startswith("p:"))
        return Record(Held(qkey, entry), fields, frags, published, fields.get("done") == "1")

    def pending_by_worker(self) -> dict[str, int]:
        """Questions held, per worker (a dead worker's stay until taken over)."""
        try:
            summary = self._r.xpending(self._stream, GROUP)
        except redis.ResponseError:
            return {}
        return {_s(c["name"]): int(c["pending"]) for c in summary.get("consumers", [])}

    def returned(self) -> int:
        """Questions handed back and not yet taken."""
        return int(self._r.llen(self._returned))
