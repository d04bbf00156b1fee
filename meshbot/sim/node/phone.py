"""The node's side of its one client connection: per-connection state and the to-client queue.

Like MeshService's to-phone queue, mesh packets heard while no client is listening wait (up to
MAX_RX_TOPHONE, oldest dropped first) and go out once the next client finishes its config download.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from meshtastic.protobuf import mesh_pb2

from meshbot.core import limits
from meshbot.sim.node.server import ClientLink
from meshbot.sim.rules import firmware as fw

logger = logging.getLogger(__name__)


@dataclass
class Session:
    """Per-connection state: the firmware builds a fresh PhoneAPI for every TCP client."""

    link: ClientLink | None  # None: the node's own API (`VirtualNode.send_text`), not a TCP client
    ready: bool = False  # config download finished: packets flow
    rate: fw.TextRateLimiter = field(default_factory=fw.TextRateLimiter)
    recent: fw.RecentKeys = field(default_factory=lambda: fw.RecentKeys(fw.RECENT_CLIENT_IDS))


class ClientSide:
    """Tracks the connected client and sends it FromRadio messages in order. Thread-safe."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition(threading.RLock())
        self._session: Session | None = None
        self._outbox: collections.deque[mesh_pb2.FromRadio] = collections.deque()
        self._handshakes = 0

    @property
    def handshakes(self) -> int:
        """Config downloads completed so far."""
        with self._cond:
            return self._handshakes

    def wait_for_handshakes(self, count: int, timeout: float) -> bool:
        """Wait (real time) until `count` config downloads have completed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._handshakes >= count, timeout)

    def attach(self, link: ClientLink) -> None:
        """A new client connected."""
        with self._cond:
            self._session = Session(link)

    def detach(self, link: ClientLink) -> None:
        """`link` closed: keep only mesh packets (queue statuses belonged to that connection)."""
        with self._cond:
            if self._session is not None and self._session.link is link:
                self._session = None
                self._outbox = collections.deque(m for m in self._outbox if m.HasField("packet"))
            self._cond.notify_all()

    def session_for(self, link: ClientLink) -> Session | None:
        """The session of `link` if it is still the current client."""
        with self._cond:
            session = self._session
            return session if session is not None and session.link is link else None

    def send_config(self, session: Session, messages: Iterable[mesh_pb2.FromRadio], *, full: bool = True) -> None:
        """Send a config download, then everything that waited for it; `full` False: a node list only (not counted)."""
        with self._cond:
            session.ready = False
            session.link.send(m.SerializeToString() for m in messages)
            session.ready = True
            self._handshakes += 1 if full else 0
            self._flush()
            self._cond.notify_all()

    def pause(self, session: Session) -> None:
        """ToRadio.disconnect: the client stops listening but keeps the socket (PhoneAPI::close)."""
        with self._cond:
            session.ready = False
            session.rate.reset()

    def emit(self, messages: Iterable[mesh_pb2.FromRadio]) -> None:
        """Send to the client, or hold until one finishes its config download."""
        with self._cond:
            self._outbox.extend(messages)
            while sum(1 for m in self._outbox if m.HasField("packet")) > fw.MAX_RX_TOPHONE:
                self._drop_oldest_packet()
            self._flush()

    def _drop_oldest_packet(self) -> None:
        for i, message in enumerate(self._outbox):
            if message.HasField("packet"):
                del self._outbox[i]
                # Expected on a mesh node nobody is connected to; worth a warning only with a client.
                level = logging.WARNING if self._session is not None else logging.DEBUG
                logger.log(level, "%s: to-client queue full, dropped the oldest packet", self._name)
                return

    def _flush(self) -> None:
        session = self._session
        if session is None or not session.ready:
            return
        payloads = []
        while self._outbox:
            data = self._outbox.popleft().SerializeToString()
            if len(data) > limits.STREAM_MAX_FRAME_LEN:
                logger.warning("%s: FromRadio of %d bytes is over the frame limit, dropped", self._name, len(data))
                continue
            payloads.append(data)
        session.link.send(payloads)
