"""The Redis connection every worker shares: packet claims, the bot's identity and learnt keys, ACKs, heartbeats.

Keys live under `mb:<group>:` so several bots can share one Redis.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import redis

from meshbot.core.config import ClusterConfig
from meshbot.core.domain import Inbound
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id

log = logging.getLogger(__name__)


REMAINDER_KEEP_S = 2 * 3600.0  # Redis forgets a remainder no "more" asked for (the worker's own age check is 1 h)


class ClusterUnavailable(ConnectionError):
    """The shared store cannot be reached: `meshbot run` exits with this message (an OSError, like a radio away)."""


def default_worker_id() -> str:
    """`<hostname>-<pid>`: unique while it runs."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Shared:
    """One worker's handle on the shared store."""

    def __init__(self, cfg: ClusterConfig, client: redis.Redis | None = None) -> None:
        self.cfg = cfg
        self.worker_id = cfg.worker_id or default_worker_id()
        self.prefix = f"mb:{cfg.group}:"
        # Any: redis-py's own annotations are too loose (bytes | str | Awaitable) to help here.
        self.r: Any = client or redis.Redis.from_url(str(cfg.redis_url), socket_timeout=5.0, health_check_interval=30)
        self._ack_thread: Any = None
        self._pubsub: Any = None

    def key(self, *parts: object) -> str:
        """A key under this bot's prefix."""
        return self.prefix + ":".join(str(p) for p in parts)

    def check(self) -> None:
        """Ping, or raise ClusterUnavailable naming the URL."""
        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise ClusterUnavailable(f"cluster.redis_url {self.cfg.redis_url}: {exc}") from None
        log.info(
            "cluster: worker %s of group %s on %s, lease %.0fs",
            self.worker_id,
            self.cfg.group,
            self.cfg.redis_url,
            self.cfg.lease_s,
            extra={"event": Event.CLUSTER_UP, "worker": self.worker_id},
        )

    # -- exactly one worker handles each packet --------------------------------------------------
    def claim(self, sender: int, packet_id: int) -> bool:
        """True for the one worker that claims (sender, packet id) first; its copies elsewhere are ignored."""
        ttl_ms = int(self.cfg.claim_ttl_s * 1000)
        return bool(self.r.set(self.key("claim", sender, packet_id), self.worker_id, nx=True, px=ttl_ms))

    def claiming(self, on_packet: Callable[[Inbound], None]) -> Callable[[Inbound], None]:
        """Wrap the radio's packet callback so only claimed packets reach this worker's intake."""

        def filtered(msg: Inbound) -> None:
            try:
                mine = self.claim(msg.sender, msg.packet_id)
            except redis.RedisError as exc:
                # Better a rare duplicate answer than a silent bot while Redis is away.
                log.error(
                    "cluster: cannot claim id %d from %s (%s): handling it here",
                    msg.packet_id,
                    node_id(msg.sender),
                    exc,
                    extra={"event": Event.CLUSTER_ERROR},
                )
                mine = True
            if mine:
                on_packet(msg)
                return
            log.info(
                "ignored id %d from %s: another worker claimed it",
                msg.packet_id,
                node_id(msg.sender),
                extra={"event": Event.CLAIMED_ELSEWHERE, "reason": Reason.DUPLICATE, "packet_id": msg.packet_id},
            )

        return filtered

    # -- ACKs for packets another worker sent ------------------------------------------------------
    def forward_ack(self, request_id: int, error: str, sender: int) -> None:
        """Tell every worker about an ACK/NAK this one cannot match (the sender may be a sibling)."""
        self.r.publish(self.key("acks"), json.dumps([request_id, error, sender]))

    def listen_acks(self, on_ack: Callable[[int, str, int], None]) -> None:
        """Call `on_ack(request_id, error, sender)` for every forwarded ACK, on a thread of its own."""
        self._pubsub = self.r.pubsub(ignore_subscribe_messages=True)

        def handler(message: dict[str, Any]) -> None:
            try:
                request_id, error, sender = json.loads(message["data"])
                on_ack(int(request_id), str(error), int(sender))
            except (ValueError, TypeError) as exc:
                log.warning("cluster: bad forwarded ACK %r: %s", message.get("data"), exc)

        self._pubsub.subscribe(**{self.key("acks"): handler})
        self._ack_thread = self._pubsub.run_in_thread(sleep_time=0.5, daemon=True)

    # -- "more" remainders (storage.store.RemainderStore) ----------------------------------------------
    def put_remainder(self, node: int, text: str, next_index: int) -> None:
        """Keep what did not fit for `node`'s next "more", whichever worker gets it."""
        body = json.dumps([text, next_index, time.time()])
        self.r.set(self.key("more", node), body, px=int(REMAINDER_KEEP_S * 1000))

    def take_remainder(self, node: int, max_age_s: float) -> tuple[str, int] | None:
        """Remove and return (text, next_index), once across all workers (GETDEL is atomic)."""
        raw = self.r.getdel(self.key("more", node))
        if raw is None:
            return None
        text, next_index, at = json.loads(raw)
        return None if at < time.time() - max_age_s else (str(text), int(next_index))

    # -- which workers are alive ---------------------------------------------------------------------
    def beat(self, info: dict[str, Any]) -> None:
        """Say this worker is alive (expires after three missed beats)."""
        ttl_ms = int(self.cfg.heartbeat_s * 3000)
        body = json.dumps({"worker": self.worker_id, **info})
        pipe = self.r.pipeline()
        pipe.set(self.key("worker", self.worker_id), body, px=ttl_ms)
        pipe.sadd(self.key("workers"), self.worker_id)
        pipe.execute()

    def gone(self) -> None:
        """Say this worker stopped."""
        self.r.delete(self.key("worker", self.worker_id))
        self.r.srem(self.key("workers"), self.worker_id)

    def workers(self) -> list[dict[str, Any]]:
        """The workers whose heartbeat is fresh, by id."""
        ids = sorted(m.decode() for m in self.r.smembers(self.key("workers")))
        alive = []
        for wid, body in zip(ids, self.r.mget([self.key("worker", w) for w in ids]) if ids else [], strict=True):
            if body is None:
                self.r.srem(self.key("workers"), wid)  # its heartbeat expired: forget it
            else:
                alive.append(json.loads(body))
        return alive

    def close(self) -> None:
        """Stop listening and close the connection."""
        if self._ack_thread is not None:
            self._ack_thread.stop()
            self._ack_thread.join(2.0)
        if self._pubsub is not None:
            self._pubsub.close()
        self.r.close()
