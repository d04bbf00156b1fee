"""Shared fixtures: virtual clock, fake radio, fake model, a daemon wired to them, and one real model server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.clock import VirtualClock
from meshbot.core.config import Config, load_config
from meshbot.service.daemon import Daemon
from meshbot.storage.store import Store
from tests.fakes import FakeModel, FakeRadio
from tests.openai_servers import LlamaServer
from tests.redis_support import RedisServer


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """A test that runs the CLI in process installs its log handler on the root: take it off again afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=1000.0)


@pytest.fixture
def radio(clock: VirtualClock) -> FakeRadio:
    return FakeRadio(clock)


@pytest.fixture
def model(clock: VirtualClock) -> FakeModel:
    return FakeModel(clock)


@pytest.fixture
def cfg() -> Config:
    return load_config(environ={})


@pytest.fixture
def make_daemon(radio: FakeRadio, model: FakeModel, clock: VirtualClock) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(cfg: Config | None = None, **overrides) -> Daemon:
        # Tests not about multi-part questions send one-liners like "one" and never advance the virtual
        # clock: a zero join window answers them at once (tests/test_joining.py sets its own).
        overrides = {"join.window_s": 0, **overrides}
        daemon = build_daemon(
            cfg or load_config(overrides=overrides, environ={}),
            radio=radio,
            model=model,
            clock=clock,
            store=Store(":memory:"),
        )
        daemon.start()
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop(grace_s=1.0)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll in real time (the daemon's threads are real) until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="session")
def bundled_model():
    """The real bundled GGUF model, loaded once for the whole run (fixed seed, so answers repeat)."""
    from meshbot.core.config import ModelConfig
    from meshbot.models.llama import load_model

    model = load_model(ModelConfig(seed=42, threads=2))
    yield model
    model.close()  # frees the engine, and the saved states' directory with it


@pytest.fixture
def real_daemon(bundled_model) -> Iterator[Callable[[int], Daemon]]:
    """Start the real daemon (real radio over TCP, bundled model) against a node's port."""
    from meshbot.core.clock import SystemClock
    from meshbot.radios.meshtastic_lib import MeshtasticRadio

    started: list[Daemon] = []

    def start(port: int, **overrides) -> Daemon:
        base = {"radio.host": f"127.0.0.1:{port}", "mesh.min_gap_s": 2.0, "radio.connect_timeout_s": 20}
        cfg = load_config(overrides={**base, **overrides}, environ={})
        bot = build_daemon(cfg, model=bundled_model, store=Store(":memory:"))
        bot.start()
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.stop(grace_s=5.0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 for one test (the cluster's shared store)."""
    server = RedisServer(tmp_path)
    server.start()  # fails the test, with redis-server's output, when it cannot start
    yield server
    server.stop()


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One real `llama_cpp.server` on the bundled GGUF for the whole run; a server that cannot start fails the test."""
    server = LlamaServer(tmp_path_factory.mktemp("model-server"))
    server.start()
    yield server
    server.kill()
