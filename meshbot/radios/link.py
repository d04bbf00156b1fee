"""Where the node is, and keeping a link to it: connect, notice the loss, reconnect with backoff.

`LinkSupervisor` is a mixin of `MeshtasticRadio`; building the library's interface (`_build`) stays there,
with the other `meshtastic` calls. Logs under the transport's logger, as before the split.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from meshbot.core import limits
from meshbot.core.config import RadioConfig
from meshbot.core.domain import LocalNode, RadioEvent, RadioUnavailable
from meshbot.core.events import Event
from meshbot.core.ids import node_id
from meshbot.radios.advice import advice
from meshbot.radios.attempt import ConnectAttempt, close_quietly

# One logger for the whole transport: operators filter its lines by this name.
log = logging.getLogger("meshbot.radios.meshtastic_lib")


def split_host(host: str) -> tuple[str, int]:
    """HOST or HOST:PORT (default 4403); [v6]:PORT works too."""
    if host.startswith("["):
        addr, _, rest = host[1:].partition("]")
        return addr, int(rest.lstrip(":") or limits.DEFAULT_TCP_PORT)
    if host.count(":") == 1:
        addr, port = host.split(":")
        return addr, int(port)
    return host, limits.DEFAULT_TCP_PORT


class LinkSupervisor:
    """Connect and reconnect for `MeshtasticRadio`. Expects the attributes and methods it sets up."""

    _cfg: RadioConfig
    _backoff: tuple[float, float]
    _iface: Any
    _node: LocalNode | None
    _on_event: Callable[[RadioEvent], None] | None
    _lock: threading.Lock
    _up: threading.Event
    _closing: threading.Event
    _supervisor: threading.Thread | None
    _ifaces: weakref.WeakSet[Any]
    # Provided by MeshtasticRadio and its other mixins (annotations only: nothing here hides them).
    _build: Callable[[Callable[[Any], None]], Any]
    _read_local_node: Callable[[Any], LocalNode]
    _release_early: Callable[[Any, LocalNode], None]
    _ask_node_list: Callable[[Any], None]

    def describe(self) -> str:
        """Where the radio is, for log lines."""
        if self._cfg.host:
            host, port = split_host(self._cfg.host)
            return f"tcp {host}:{port}"
        if self._cfg.ble:
            return f"ble {self._cfg.ble}"
        return f"serial {self._cfg.port or '(auto)'}"

    def _connect(self) -> bool:
        """One connect attempt: True when up, False when close() won; raises why the attempt failed."""
        log.info("connecting to %s", self.describe(), extra={"event": Event.RADIO_CONNECTING})
        iface = ConnectAttempt(self._build).wait(self._closing)
        if iface is None:
            return False
        with self._lock:
            if self._closing.is_set():  # close() came while the attempt was returning
                late = iface
            else:
                late = None
                self._iface = iface
                self._ifaces.add(iface)
                self._node = node = self._read_local_node(iface)
                self._release_early(iface, node)
        if late is not None:
            close_quietly(late)
            return False
        self._ask_node_list(iface)
        self._up.set()
        node = self.local_node()
        log.info(
            "radio connected: %s is %s (%s), %s %s, hop limit %d",
            self.describe(),
            node_id(node.node_num),
            node.short_name or "?",
            node.region,
            node.modem_preset,
            node.hop_limit,
            extra={"event": Event.RADIO_UP, "node": node_id(node.node_num)},
        )
        for code in node.problems():
            log.warning(
                "radio %s: %s",
                node_id(node.node_num),
                advice(code),
                extra={"event": Event.RADIO_CANNOT_SEND, "reason": code},
            )
        return True

    def wait_settled(self, timeout: float) -> bool:
        """Wait until the node answered the library's first heartbeat; False if it did not within `timeout`.

        The library sends that heartbeat from its reader thread just after it reports the connection up. Closing
        before it went out makes the write fail inside the library, which prints a BrokenPipeError traceback:
        a client that may close at once (a one-shot command) waits here first.
        """
        deadline = time.monotonic() + timeout
        while getattr(self._iface, "queueStatus", None) is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def local_node(self) -> LocalNode:
        """Our node as read at the last connect."""
        if self._node is None:
            raise RadioUnavailable("not connected yet")
        return self._node

    def _on_lost(self, interface: Any) -> None:
        if interface is self._iface and not self._closing.is_set():
            self._link_down("connection lost")

    # -- supervision ---------------------------------------------------------------------------------
    def _link_down(self, why: str) -> None:
        with self._lock:
            if not self._up.is_set() or self._closing.is_set():
                return
            self._up.clear()
        log.error("radio down (%s): reconnecting", why, extra={"event": Event.RADIO_DOWN, "reason": why})
        if self._on_event is not None:
            self._on_event(RadioEvent.LOST)
        self._supervisor = threading.Thread(target=self._reconnect_until_up, name="meshbot-radio", daemon=True)
        self._supervisor.start()

    def _reconnect_until_up(self) -> bool:
        """Connect, retrying with backoff; True once up, False when close() ended it."""
        delay, cap = self._backoff
        attempt = 0
        while not self._closing.is_set():
            attempt += 1
            self._close_iface()
            try:
                if not self._connect():
                    break
            except Exception as exc:  # any failure to connect: wait and try again, until closed
                log.warning(
                    "connect attempt %d to %s failed: %s; next in %.0fs",
                    attempt,
                    self.describe(),
                    exc,
                    delay,
                    extra={"event": Event.RADIO_RETRY, "attempt": attempt},
                )
                self._closing.wait(delay)  # close() cuts the backoff short
                delay = min(delay * 2, cap)
                continue
            if self._on_event is not None:
                self._on_event(RadioEvent.CONNECTED)
            return True
        log.debug("stopped connecting to %s: radio closed", self.describe())
        return False

    def _close_iface(self) -> None:
        with self._lock:
            iface, self._iface = self._iface, None
        if iface is not None:
            close_quietly(iface)
