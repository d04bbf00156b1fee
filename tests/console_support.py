"""Shared by the console tests: the real daemon on a threaded virtual mesh with its console on, and a scrape."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshbot.app.compose import build_daemon
from meshbot.core.config import load_config
from meshbot.service.daemon import Daemon
from meshbot.sim.app.network import VirtualMesh
from meshbot.storage.store import Store
from tests.cluster_support import EchoModel
from tests.mesh_support import BOT, topology

WAIT = 30.0  # real seconds for what takes a few


@dataclass
class ConsoleBot:
    """A running daemon with its console, on a virtual mesh where Alice (two hops away) and Bob ask."""

    mesh: VirtualMesh
    daemon: Daemon
    model: EchoModel

    @property
    def url(self) -> str:
        """The console's base URL."""
        console = next(c for c in self.daemon.companions if hasattr(c, "port"))
        return f"http://127.0.0.1:{console.port}"

    def ask(self, who: str, text: str, after_s: float = 0.0) -> None:
        """`who` DMs the bot `after_s` mesh seconds from now, on the mesh's own thread.

        A handset's firmware refuses a second text within 2 s of its first, and two nodes sending at once
        may collide on air: space the questions.
        """
        node = self.mesh.node(who)
        self.mesh.scheduler.call_later(after_s, lambda: node.send_text(text, to=BOT))


def mesh_topology(time_scale: float = 20.0):
    """Alice - Relay - BOT, and Bob next to the bot."""
    nodes = [
        ("Alice", "handset", ["Relay"]),
        ("Relay", "relay", ["BOT"]),
        ("Bob", "handset", ["BOT"]),
        ("BOT", "bot", []),
    ]
    # modules: the nodes send device telemetry and positions (the firmware's intervals, much sped up).
    return topology(nodes, time_scale=time_scale, modules=True, modules_speedup=60.0)


@pytest.fixture
def console_bot(tmp_path: Path) -> Iterator[Callable[..., ConsoleBot]]:
    """Start the mesh and the daemon (real meshtastic radio over TCP, console on a free port)."""
    made: list[ConsoleBot] = []

    def start(store_path: Path | None = None, **overrides: object) -> ConsoleBot:
        mesh = VirtualMesh(mesh_topology(), manual=False)
        mesh.start(announce=True)
        # Every node has heard the others' keys before anyone asks: a DM sealed without one is refused (issue 17).
        assert mesh.settle(WAIT), "the virtual mesh did not settle"
        settings = {
            "radio.host": f"127.0.0.1:{mesh.bot.port}",
            "radio.connect_timeout_s": 20,
            "mesh.min_gap_s": 2.0,
            "join.window_s": 0,
            "console.port": 0,
            **overrides,
        }
        cfg = load_config(overrides=settings, environ={})
        model = EchoModel()
        store = Store(store_path or tmp_path / "state.db")
        daemon = build_daemon(cfg, model=model, store=store)
        daemon.start()
        bot = ConsoleBot(mesh, daemon, model)
        made.append(bot)
        return bot

    yield start
    for bot in made:
        if not bot.daemon._stop.is_set():
            bot.daemon.stop(grace_s=2.0)
        bot.mesh.stop()


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    """GET `url`: (status, body), an HTTP error's too."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def scrape(url: str, token: str | None = None) -> dict[str, float]:
    """/metrics through prometheus_client's own parser: {"name{label=value,...}": value} per sample."""
    status, body = get(f"{url}/metrics", token)
    assert status == 200, body
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples
