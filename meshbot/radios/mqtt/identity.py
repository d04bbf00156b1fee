"""The bot's own PKI identity and the public keys it learns from askers' NodeInfo."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from meshbot.core.config import MqttConfig
from meshbot.core.events import Event
from meshbot.core.ids import node_id, parse_node_id
from meshbot.core.keytext import parse_key_bytes
from meshbot.radios.mqtt import crypto
from meshbot.radios.mqtt.state import BoundedTTL


class KeyBackend(Protocol):
    """Where the identity and learnt keys are kept: the local store (storage.keys) or the shared one (cluster.keys)."""

    def identity(self) -> tuple[int, bytes] | None: ...
    def keep_identity(self, node: int, private_key: bytes, now: float) -> tuple[int, bytes]: ...
    def remember(self, node: int, public_key: bytes, now: float, max_rows: int) -> None: ...
    def recent(self, now: float, max_age_s: float, limit: int) -> list[tuple[int, bytes, float]]: ...
    def lookup(self, node: int) -> tuple[bytes, float] | None: ...


log = logging.getLogger(__name__)

_DAY_S = 86400.0
# A node number we make up: away from the low numbers the firmware reserves, never broadcast.
_NODE_MIN, _NODE_MAX = 0x10000000, 0xFFFFFFFE


@dataclass(frozen=True)
class Identity:
    """Who the bot is on the mesh: its node number and X25519 key pair."""

    node_num: int
    private_key: bytes
    public_key: bytes

    def __repr__(self) -> str:  # the private key never reaches a log line or a traceback
        return f"Identity({node_id(self.node_num)}, public {self.public_key[:4].hex()}...)"


def resolve_identity(cfg: MqttConfig, keys: KeyBackend, wall: Callable[[], float]) -> Identity:
    """The configured identity, else the one kept in the store, else a new one (kept for next time)."""
    stored = keys.identity()
    node = parse_node_id(cfg.node_id) if cfg.node_id else None
    private = parse_key_bytes(cfg.private_key.get_secret_value()) if cfg.private_key else None
    origin = "configured"
    if node is None or private is None:
        if stored is None:
            stored = keys.keep_identity(
                node or _NODE_MIN + secrets.randbelow(_NODE_MAX - _NODE_MIN),
                private or crypto.generate_private_key(),
                wall(),
            )
            origin = "new, kept in the store"
        else:
            origin = "from the store"
        node = node or stored[0]
        private = private or stored[1]
    ident = Identity(node, private, crypto.public_key_of(private))
    log.info(
        "mqtt identity %s (%s), public key %s...",
        node_id(node),
        origin,
        ident.public_key[:4].hex(),
        extra={"event": Event.IDENTITY, "node": node_id(node)},
    )
    return ident


class Keyring:
    """Askers' public keys: a bounded, expiring memory in front of the store's bounded, expiring table."""

    def __init__(
        self, keys: KeyBackend, max_nodes: int, ttl_s: float, clock: Callable[[], float], wall: Callable[[], float]
    ) -> None:
        self._store = keys
        self._max = max_nodes
        self._ttl = ttl_s
        self._wall = wall
        # node -> (key, when the store's row was last written)
        self._mem: BoundedTTL[int, tuple[bytes, float]] = BoundedTTL(max_nodes, ttl_s, clock)
        self._waiters: BoundedTTL[int, threading.Event] = BoundedTTL(1024, 600.0, clock)
        for node, key, at in reversed(keys.recent(wall(), ttl_s, max_nodes)):  # oldest first: newest stay in front
            self._mem.put(node, (key, at))

    def get(self, node: int) -> bytes | None:
        """The public key heard from `node`, if still remembered (here, or in the store by another worker)."""
        known = self._mem.get(node)
        if known is None:
            stored = self._store.lookup(node)
            if stored is None or self._wall() - stored[1] > self._ttl:
                return None
            known = stored
            self._mem.put(node, known)
        return known[0]

    def learn(self, node: int, public_key: bytes) -> bool:
        """Remember `node`'s key from its NodeInfo; True when it is new or changed."""
        if len(public_key) != crypto.KEY_BYTES:
            return False
        known: tuple[bytes, float] | None = self._mem.get(node)
        now = self._wall()
        changed = known is None or known[0] != public_key
        # A re-announcement refreshes memory; the store's row is rewritten at most daily, so it expires only
        # for nodes no longer heard.
        if known is None or changed or now - known[1] > _DAY_S:
            self._store.remember(node, public_key, now, self._max)
            known = (public_key, now)
        self._mem.put(node, known)
        if changed:
            log.info(
                "learnt the public key of %s",
                node_id(node),
                extra={"event": Event.KEY_LEARNT, "node": node_id(node)},
            )
        waiter = self._waiters.pop(node)
        if waiter is not None:
            waiter.set()
        return changed

    def waiter(self, node: int) -> threading.Event:
        """An event set when `node`'s key is learnt (shared by everyone waiting for that node)."""
        event = self._waiters.get(node)
        if event is None:
            event = threading.Event()
            self._waiters.put(node, event)
        if self._mem.get(node) is not None:
            event.set()
        return event

    def __len__(self) -> int:
        return len(self._mem)


def key_ttl_s(cfg: MqttConfig) -> float:
    """How long a learnt key is kept without being heard again."""
    return cfg.key_ttl_days * _DAY_S
