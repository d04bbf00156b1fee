"""The bot's identity and askers' public keys in the shared store: the same interface as storage.keys.KeyStore.

Every worker speaks as the same node with the same key pair (the first worker's, kept with `SET NX`),
and a key learnt from a NodeInfo by one worker decrypts that asker's DMs on every worker, including
one started later.
"""

from __future__ import annotations

from meshbot.cluster.shared import Shared


class SharedKeys:
    """Identity: one string `<node>:<private hex>`; keys: a hash node -> key and a sorted set node -> heard."""

    def __init__(self, shared: Shared) -> None:
        self._r = shared.r
        self._id = shared.key("identity")
        self._keys = shared.key("keys")
        self._heard = shared.key("keys-heard")

    def identity(self) -> tuple[int, bytes] | None:
        """The identity every worker uses, if one was kept."""
        raw = self._r.get(self._id)
        if raw is None:
            return None
        node, private = raw.decode().split(":")
        return int(node), bytes.fromhex(private)

    def keep_identity(self, node: int, private_key: bytes, now: float) -> tuple[int, bytes]:
        """Keep this identity unless a worker kept one first; the one kept."""
        self._r.set(self._id, f"{node}:{private_key.hex()}", nx=True)
        kept = self.identity()
        assert kept is not None
        return kept

    def pin(self, node: int, public_key: bytes, now: float, max_rows: int, max_age_s: float) -> bytes:
        """Pin `node`'s key unless a worker pinned another (HSETNX: the first wins); returns the pinned key."""
        heard = self._r.zscore(self._heard, str(node))
        if heard is not None and float(heard) < now - max_age_s:
            self.forget(node)  # not heard for too long: the pin is gone
        self._r.hsetnx(self._keys, str(node), public_key)
        kept = self._r.hget(self._keys, str(node))
        if kept is None:  # forgotten between the two calls: try once more
            self._r.hsetnx(self._keys, str(node), public_key)
            kept = self._r.hget(self._keys, str(node)) or public_key
        if bytes(kept) == public_key:
            self._r.zadd(self._heard, {str(node): now})
        self._bound(max_rows)
        return bytes(kept)

    def forget(self, node: int) -> bool:
        """Unpin `node`'s key on every worker; True when one was pinned."""
        pipe = self._r.pipeline()
        pipe.hdel(self._keys, str(node))
        pipe.zrem(self._heard, str(node))
        gone, _ = pipe.execute()
        return bool(gone)

    def _bound(self, max_rows: int) -> None:
        excess = self._r.zcard(self._heard) - max_rows
        if excess > 0:
            old = self._r.zrange(self._heard, 0, excess - 1)
            self._r.zrem(self._heard, *old)
            self._r.hdel(self._keys, *old)

    def recent(self, now: float, max_age_s: float, limit: int) -> list[tuple[int, bytes, float]]:
        """Keys heard within `max_age_s`, most recent first; older ones are deleted."""
        old = self._r.zrangebyscore(self._heard, "-inf", now - max_age_s)
        if old:
            self._r.zrem(self._heard, *old)
            self._r.hdel(self._keys, *old)
        nodes = self._r.zrevrange(self._heard, 0, limit - 1, withscores=True)
        if not nodes:
            return []
        keys = self._r.hmget(self._keys, [n for n, _ in nodes])
        return [(int(n), bytes(k), float(at)) for (n, at), k in zip(nodes, keys, strict=True) if k is not None]

    def lookup(self, node: int) -> tuple[bytes, float] | None:
        """`node`'s key and when it was heard, whoever learnt it."""
        pipe = self._r.pipeline()
        pipe.hget(self._keys, str(node))
        pipe.zscore(self._heard, str(node))
        key, at = pipe.execute()
        return None if key is None or at is None else (bytes(key), float(at))

    def pins(self, limit: int) -> list[tuple[int, bytes, float]]:
        """Pinned keys, most recently heard first (read only: `meshbot keys list`)."""
        nodes = self._r.zrevrange(self._heard, 0, limit - 1, withscores=True)
        if not nodes:
            return []
        keys = self._r.hmget(self._keys, [n for n, _ in nodes])
        return [(int(n), bytes(k), float(at)) for (n, at), k in zip(nodes, keys, strict=True) if k is not None]

    def count(self) -> int:
        """Keys kept."""
        return int(self._r.hlen(self._keys))
