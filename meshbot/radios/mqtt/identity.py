"""The bot's own PKI identity and the public keys it learns from askers' NodeInfo."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from meshbot.core.config import MqttConfig
from meshbot.core.domain import Clock
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id, parse_node_id
from meshbot.core.keytext import parse_key_bytes
from meshbot.radios.mqtt import crypto
from meshbot.radios.mqtt.state import BoundedTTL


class KeyBackend(Protocol):
    """Where the identity and learnt keys are kept: the local store (storage.keys) or the shared one (cluster.keys)."""

    def identity(self) -> tuple[int, bytes] | None: ...
    def keep_identity(self, node: int, private_key: bytes, now: float) -> tuple[int, bytes]: ...
    def pin(self, node: int, public_key: bytes, now: float, max_rows: int, max_age_s: float) -> bytes: ...
    def forget(self, node: int) -> bool: ...
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
        self._warned: BoundedTTL[int, bytes] = BoundedTTL(4096, 3600.0, clock)  # node -> last key refused
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
        """Pin `node`'s key from its NodeInfo if none is pinned (trust on first use); True when newly pinned.

        A NodeInfo that would change a pinned key is dropped with a WARNING, as the firmware drops it
        (NodeDB::updateUser, "Public Key mismatch"): anyone on the channel can announce any node id.
        """
        if len(public_key) != crypto.KEY_BYTES:
            return False
        known: tuple[bytes, float] | None = self._mem.get(node)
        now = self._wall()
        if known is not None and known[0] == public_key:
            # A re-announcement refreshes memory; the store's row is rewritten at most daily, so it expires
            # only for nodes no longer heard.
            if now - known[1] > _DAY_S:
                self._store.pin(node, public_key, now, self._max, self._ttl)
                known = (public_key, now)
            self._mem.put(node, known)
            self._wake(node)
            return False
        # The store decides: another worker, or an operator's `meshbot keys forget`, may have changed the pin.
        kept = self._store.pin(node, public_key, now, self._max, self._ttl)
        self._mem.put(node, (kept, now))
        if kept != public_key:
            self._mismatch(node, kept, public_key)
            return False
        log.info(
            "learnt the public key of %s (pinned)",
            node_id(node),
            extra={"event": Event.KEY_LEARNT, "node": node_id(node)},
        )
        self._wake(node)
        return True

    def forget(self, node: int) -> bool:
        """Unpin `node`'s key (an operator's `!rekey`): its next NodeInfo is believed. True when one was pinned."""
        had = self._store.forget(node)
        had = self._mem.pop(node) is not None or had
        self._warned.pop(node)
        if had:
            log.warning(
                "forgot the pinned key of %s: its next NodeInfo is pinned",
                node_id(node),
                extra={"event": Event.KEY_FORGOTTEN, "node": node_id(node)},
            )
        return had

    def _mismatch(self, node: int, kept: bytes, offered: bytes) -> None:
        # One WARNING per node and offered key an hour: an impostor may announce every few seconds.
        first = self._warned.get(node) != offered
        if first:  # not refreshed by repeats: an impostor who keeps announcing is warned of again hourly
            self._warned.put(node, offered)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "dropped NodeInfo from %s: %s (pinned %s..., offered %s...); if the node really has a new key, "
            "run `meshbot keys forget %s` or send !rekey %s",
            node_id(node),
            Reason.KEY_MISMATCH,
            kept[:4].hex(),
            offered[:4].hex(),
            node_id(node),
            node_id(node),
            extra={"event": Event.KEY_MISMATCH, "reason": Reason.KEY_MISMATCH, "node": node_id(node)},
        )

    def _wake(self, node: int) -> None:
        waiter = self._waiters.pop(node)
        if waiter is not None:
            waiter.set()

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


class KeyWait:
    """A DM to a node whose key we lack waits briefly for its NodeInfo; one that never came is not waited for again soon."""

    def __init__(self, keyring: Keyring, clock: Clock, wait_s: float, ask: Callable[[int], None]) -> None:
        self._keyring, self._clock, self._wait_s, self._ask = keyring, clock, wait_s, ask
        # Nodes whose key did not come in time: their next fragments are dropped at once, not after another wait.
        self._keyless: BoundedTTL[int, bool] = BoundedTTL(4096, max(wait_s * 8, 60.0), clock.now)

    def ready(self, dest: int) -> bool:
        """True once `dest`'s key is known, asking for it and waiting up to `wait_s` if need be."""
        if self._keyring.get(dest) is not None:
            return True
        if self._keyless.get(dest) is not None:
            return False
        log.info(
            "no public key for %s yet: asking for their NodeInfo, waiting up to %.0fs",
            node_id(dest),
            self._wait_s,
            extra={"event": Event.KEY_WAIT, "node": node_id(dest)},
        )
        waiter = self._keyring.waiter(dest)
        self._ask(dest)
        if self._clock.wait_for(waiter, self._wait_s) and self._keyring.get(dest) is not None:
            return True
        self._keyless.put(dest, True)
        return False

    def forget(self, dest: int) -> None:
        """Wait for `dest`'s key again next time (its pin was forgotten)."""
        self._keyless.pop(dest)


def key_ttl_s(cfg: MqttConfig) -> float:
    """How long a learnt key is kept without being heard again."""
    return cfg.key_ttl_days * _DAY_S
