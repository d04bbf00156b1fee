"""The console as a daemon companion: restores its history, samples the daemon's levels, serves, stops with it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshbot.console.history import MINUTE_S, Minute, series
from meshbot.console.metrics import NODE_WINDOWS, ConsoleMetrics
from meshbot.console.server import ConsoleServer
from meshbot.core.config import ConsoleConfig
from meshbot.core.events import Event
from meshbot.core.metrics import DeviceFigures, NodeFigures
from meshbot.storage.console import ConsoleTable

if TYPE_CHECKING:
    from meshbot.service.daemon import Daemon

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 5.0  # levels (queue depth, the node's figures) are sampled this often


class Console:
    """Serves `/metrics`, the JSON feed and the page while the daemon runs."""

    def __init__(
        self,
        cfg: ConsoleConfig,
        metrics: ConsoleMetrics,
        nodes: NodeFigures | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.history = metrics.history
        self.nodes = nodes
        self._wall = wall
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._daemon: Daemon | None = None
        self._table: ConsoleTable | None = None
        token = cfg.token.get_secret_value() if cfg.token is not None else None
        self.server = ConsoleServer(cfg.host, cfg.port or 0, token, metrics.exposition, self.feed)

    @property
    def port(self) -> int:
        """The port the console listens on."""
        return self.server.port

    @property
    def minutes(self) -> int:
        """How many one-minute buckets the history keeps."""
        return int(self.cfg.history_h * 60)

    def start(self, daemon: Daemon) -> None:
        """Restore the stored history, bind the gauges to the daemon, start sampling and serving."""
        self._daemon = daemon
        self._table = ConsoleTable(daemon.store, self.minutes)
        since = int(self._wall() // MINUTE_S) - self.minutes
        self.history.restore(Minute.from_json(m, s) for m, s in self._table.load(since))
        self._bind_gauges(daemon)
        self._sampler = threading.Thread(target=self._sample_loop, name="meshbot-console-sampler", daemon=True)
        self._sampler.start()
        self.server.start()
        log.info(
            "console on http://%s:%d/ (metrics at /metrics)%s",
            self.cfg.host,
            self.port,
            ", bearer token required" if self.cfg.token is not None else "",
            extra={"event": Event.CONSOLE_UP, "port": self.port},
        )

    def _bind_gauges(self, daemon: Daemon) -> None:
        m = self.metrics
        m.own(m.queue_depth).set_function(daemon.queue.depth)
        m.own(m.radio_up).set_function(lambda: 1.0 if daemon.radio_up.is_set() else 0.0)
        m.airtime_budget.set_function(lambda: daemon.pacer.budget_s)
        m.airtime_hour.set_function(lambda: daemon.pacer.ledger.used(daemon.clock.now()))
        if self.nodes is None:
            return
        nodes = self.nodes
        for label, window in NODE_WINDOWS.items():
            m.nodes_heard.labels(window=label).set_function(_heard(nodes, window))
        m.battery.set_function(lambda: _figure(nodes.own_device(), "battery_percent"))
        m.channel_util.set_function(lambda: _figure(nodes.own_device(), "channel_utilization_percent"))
        m.air_util_tx.set_function(lambda: _figure(nodes.own_device(), "air_util_tx_percent"))

    def quiesce(self, daemon: Daemon) -> None:
        """Nothing to refuse: the console only reads."""

    def stop(self, daemon: Daemon) -> None:
        """Stop serving and sampling; the minute in progress is stored (before the store closes)."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(2.0)
        self.server.close()
        self._save(self.history.take_closed() + [m for m in [self.history.current()] if m is not None])

    def close(self) -> None:
        """Free the port of a console never started (build_daemon failed after binding it)."""
        self.server.close()

    def _sample_loop(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a failing sample (disk full) must not end the sampling
                log.exception("console: sampling failed")
            if self._stop.wait(SAMPLE_EVERY_S):
                return

    def sample(self) -> None:
        """Record the daemon's levels now and store the minutes that closed."""
        daemon = self._daemon
        if daemon is None:
            return
        device = self.nodes.own_device() if self.nodes is not None else None
        heard = self.nodes.nodes_heard(NODE_WINDOWS["1h"]) if self.nodes is not None else None
        self.history.sample(self._wall(), daemon.queue.depth(), device, heard)
        self._save(self.history.take_closed())

    def _save(self, minutes: list[Minute]) -> None:
        if self._table is None:
            return
        for m in minutes:
            self._table.save(m.minute, m.to_json())

    def feed(self) -> dict[str, Any]:
        """The JSON the page reads: the plot series, the last questions and the figures of the moment."""
        daemon = self._daemon
        now = self._wall()
        if daemon is not None:
            self.history.sample(now, daemon.queue.depth(), None, None)
        node = daemon.node if daemon is not None else None
        return {
            "now": now,
            "bot": {"short_name": node.short_name, "region": node.region, "preset": node.modem_preset} if node else {},
            "radio_up": bool(daemon and daemon.radio_up.is_set()),
            "queue_depth": daemon.queue.depth() if daemon else 0,
            "budget_s": daemon.pacer.budget_s if daemon else None,
            "budget_10m_s": daemon.pacer.budget_s / 6 if daemon else None,
            "show_text": self.cfg.show_text,
            "series": series(self.history.snapshot()),
            "questions": self.history.questions(self.cfg.show_text),
        }


def _heard(nodes: NodeFigures, window_s: float) -> Callable[[], float]:
    return lambda: float(nodes.nodes_heard(window_s))


def _figure(device: DeviceFigures | None, name: str) -> float:
    value = getattr(device, name, None) if device is not None else None
    return float("nan") if value is None else float(value)
