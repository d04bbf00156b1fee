"""The composition root: the one place that builds a daemon from a `Config`.

`meshbot run`, `meshbot sim --bot`, the benchmarks and the test fixtures all call `build_daemon`; tests
pass fakes for the radio, model, clock or store, everything else comes from the config through the
registries (`meshbot.models.BACKENDS`, `meshbot.radios.TRANSPORTS`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from meshbot.core.clock import SystemClock
from meshbot.core.config import Config, ConfigError
from meshbot.core.domain import Clock, Model, Radio
from meshbot.core.registry import UnknownName
from meshbot.models import BACKENDS, make_model
from meshbot.radios import TRANSPORTS, make_radio
from meshbot.service.context import Contexts, ContextSource
from meshbot.service.daemon import Daemon, Inbox
from meshbot.service.knowledge import KnowledgeSource
from meshbot.storage.knowledge import KnowledgeIndex
from meshbot.storage.store import Store


def check_names(cfg: Config) -> None:
    """Raise ConfigError unless every registry name in the config is known (`meshbot config check`)."""
    try:
        BACKENDS.check(cfg.model.backend)
        TRANSPORTS.check(cfg.radio.transport)
    except UnknownName as exc:
        raise ConfigError(str(exc)) from None


def open_store(cfg: Config) -> Store:
    """The durable store `[store] path` names, its folder created if missing."""
    if cfg.store.path != ":memory:":
        Path(cfg.store.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return Store(cfg.store.path)


def knowledge_index_path(cfg: Config, store_path: str) -> str:
    """Where the knowledge index lives: `[knowledge] index_path`, else next to the store (in memory with it)."""
    if cfg.knowledge.index_path:
        path = Path(cfg.knowledge.index_path).expanduser()
    elif store_path == ":memory:":
        return ":memory:"
    else:
        store = Path(store_path).expanduser()
        path = store.with_name(f"{store.stem}.knowledge.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def open_knowledge(cfg: Config, store_path: str) -> KnowledgeSource:
    """The knowledge source for `[knowledge]`, its background indexer started."""
    index = KnowledgeIndex(knowledge_index_path(cfg, store_path), cfg.knowledge.passage_bytes)
    source = KnowledgeSource(index, cfg.knowledge)
    source.start()
    return source


def context_sources(cfg: Config, store: Store) -> list[ContextSource]:
    """What each question's prompt gets besides the question, in order (see service/context.py)."""
    sources: list[ContextSource] = []
    if cfg.knowledge.active:
        sources.append(open_knowledge(cfg, store.path))
    return sources


@contextlib.contextmanager
def _closed_on(stop: threading.Event | None, radio: Radio) -> Iterator[None]:
    """While connecting: a stop closes the radio, which ends its (otherwise endless) connect retries."""
    if stop is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            if stop.is_set():
                radio.close()
                return

    watcher = threading.Thread(target=watch, name="meshbot-connect-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def build_daemon(
    cfg: Config,
    *,
    radio: Radio | None = None,
    model: Model | None = None,
    clock: Clock | None = None,
    store: Store | None = None,
    stop: threading.Event | None = None,
) -> Daemon:
    """Load the model, connect the radio and return a whole Daemon, not yet started.

    Raises ModelError, RadioUnavailable or ConfigError with a message for the operator; what it
    opened is closed again. `stop` set while the radio connects aborts the connect.
    """
    check_names(cfg)
    clock = clock or SystemClock()
    store = store or open_store(cfg)
    opened: list[Model | Radio] = []
    try:
        if model is None:
            model = make_model(cfg.model, clock)
            opened.append(model)
        if radio is None:
            radio = make_radio(cfg, store, clock)
        opened.append(radio)
        inbox = Inbox()
        with _closed_on(stop, radio):
            radio.start(inbox.put_packet, inbox.put_event)
        inbox.radio_up.set()  # start() returns connected
        node = radio.local_node()
        contexts = Contexts(context_sources(cfg, store))
        return Daemon(
            cfg, radio=radio, model=model, clock=clock, store=store, node=node, inbox=inbox, contexts=contexts
        )
    except BaseException:
        for part in reversed(opened):
            part.close()
        store.close()
        raise
