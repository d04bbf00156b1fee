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
from typing import TYPE_CHECKING

from meshbot.console.nodes import DirectoryFigures
from meshbot.core.clock import SystemClock
from meshbot.core.config import Config, ConfigError
from meshbot.core.directory import NodeReport, NodeUser
from meshbot.core.domain import Clock, LocalNode, Model, NodeDirectory, NodeReporter, Radio
from meshbot.core.metrics import NO_METRICS, NodeFigures
from meshbot.core.power import Mode
from meshbot.core.registry import UnknownName
from meshbot.models import BACKENDS, make_model
from meshbot.radios import TRANSPORTS, make_radio
from meshbot.service.commands import CommandHooks
from meshbot.service.context import AskerSource, Contexts, ContextSource
from meshbot.service.daemon import Companion, Daemon, Inbox
from meshbot.service.directory import DirectoryTable as DirectoryTables
from meshbot.service.directory import MeshDirectory
from meshbot.service.directory_facts import DirectoryFacts
from meshbot.service.emergency import EmergencyLane
from meshbot.service.knowledge import KnowledgeSource
from meshbot.service.ledger import Ledger
from meshbot.service.memory import ConversationMemory, MemoryTables
from meshbot.service.mesh_context import MeshContext
from meshbot.service.power import PowerMonitor, PowerSources
from meshbot.service.reference import open_reference
from meshbot.storage.directory import DirectoryTable
from meshbot.storage.knowledge import KnowledgeIndex
from meshbot.storage.memory import MemoryTable
from meshbot.storage.store import Store

if TYPE_CHECKING:
    from meshbot.console.console import Console


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


def conversation_memory(
    cfg: Config, store: Store, model: Model | None = None, table: MemoryTables | None = None
) -> ConversationMemory:
    """Per-node memory in `table` (default: `store`'s), counting tokens with the model's tokenizer when it has one."""
    count_tokens = getattr(model, "count_tokens", None)
    table = table if table is not None else MemoryTable(store)
    return ConversationMemory(table, cfg, count_tokens if callable(count_tokens) else None)


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


def open_knowledge(cfg: Config, store_path: str, power: PowerMonitor | None = None) -> KnowledgeSource | None:
    """The knowledge source for `[knowledge]` and `[answers] reference`, its indexer started (paused below normal
    power); None: both off."""
    reference = open_reference(cfg.answers, cfg.knowledge.passage_bytes)
    if not cfg.knowledge.active and reference is None:
        return None
    index = KnowledgeIndex(knowledge_index_path(cfg, store_path), cfg.knowledge.passage_bytes)
    may_reindex = (lambda: power.mode() is Mode.NORMAL) if power is not None else None
    source = KnowledgeSource(index, cfg.knowledge, reference, may_reindex)
    source.start()
    return source


def context_sources(
    radio: Radio | None = None,
    memory: ConversationMemory | None = None,
    knowledge: KnowledgeSource | None = None,
    mesh: MeshContext | None = None,
    directory: NodeDirectory | None = None,
) -> list[ContextSource]:
    """What each question's prompt gets besides the question, in order (see service/context.py)."""
    named = directory if directory is not None else radio
    short_name_of = getattr(named, "short_name_of", None)
    sources: list[ContextSource] = []
    if memory is not None:
        sources.append(memory)
    if knowledge is not None:
        sources.append(knowledge)
    if mesh is not None:
        sources.append(mesh)
    sources.append(AskerSource(short_name_of if callable(short_name_of) else None))
    return sources


def command_hooks(
    memory: ConversationMemory | None, knowledge: KnowledgeSource | None, mesh: MeshContext | None = None
) -> CommandHooks:
    """What !reset and !src call: memory's forget, the notes' and the directory's last source (None: off)."""
    return CommandHooks(
        forget=memory.forget if memory is not None else None,
        last_source=knowledge.last_source if knowledge is not None else None,
        mesh_source=mesh.last_source if mesh is not None else None,
    )


def open_directory(cfg: Config, store: Store, radio: Radio, table: DirectoryTables | None = None) -> MeshDirectory:
    """The node directory in `table` (default: `store`'s), fed by `radio` when it reports nodes (before it starts)."""
    fallback = getattr(radio, "short_name_of", None)
    directory = MeshDirectory(
        cfg.mesh_directory,
        table if table is not None else DirectoryTable(store),
        fallback_names=fallback if callable(fallback) else None,
    )
    if isinstance(radio, NodeReporter):
        radio.report_nodes(directory.note)
    return directory


def note_own_node(directory: MeshDirectory, radio: Radio) -> None:
    """The bot's own node, as its radio named it at connect."""
    node = radio.local_node()
    directory.note(NodeReport(node.node_num, user=NodeUser(node.short_name, node.long_name), is_self=True))


def emergency_lane(
    cfg: Config, facts: DirectoryFacts, node: LocalNode, store: Store, clock: Clock
) -> EmergencyLane | None:
    """The emergency lane (`[emergency]`), reading senders' names and positions from the node directory."""
    if not cfg.emergency.active:
        return None
    return EmergencyLane(
        cfg, clock=clock, node=node, is_new=store.mark_seen, positions=facts, short_name_of=facts.short_name_of
    )


def power_monitor(
    cfg: Config, facts: DirectoryFacts, node: LocalNode, store: Store, clock: Clock
) -> PowerMonitor | None:
    """The power monitor (`[power]`), reading the bot's own node's device metrics from the node directory."""
    if not cfg.power.enabled:
        return None
    return PowerMonitor(cfg.power, PowerSources(cfg.power, facts, node.node_num), clock, store)


class _ClusterParts:
    """What one worker of several needs (`[cluster] redis_url` set): the shared store and its users."""

    def __init__(self, cfg: Config, store: Store) -> None:
        from meshbot.cluster.custodian import Custodian
        from meshbot.cluster.directory import SharedDirectoryTable
        from meshbot.cluster.keys import SharedKeys
        from meshbot.cluster.ledger import ClusterLedger
        from meshbot.cluster.memory import SharedMemory
        from meshbot.cluster.shared import Shared
        from meshbot.cluster.worklog import WorkLog

        if cfg.radio.transport != "mqtt":
            raise ConfigError('cluster.redis_url: several workers need radio.transport = "mqtt"')
        self.shared = Shared(cfg.cluster)
        self.shared.check()
        self.keys = SharedKeys(self.shared)
        store.shared_remainders = self.shared
        # A follow-up may reach any worker: conversations live in Redis, not in this worker's store.
        self.memory: MemoryTables = SharedMemory(self.shared)
        ledger = ClusterLedger(store, WorkLog(self.shared, cfg.cluster.lease_s))
        self.ledger: Ledger = ledger
        self.companions: list[Companion] = [Custodian(self.shared, ledger)]
        # What each worker hears of the mesh (its share of the uplinks) goes into one directory for all.
        self.directory: DirectoryTables = SharedDirectoryTable(self.shared)

    def share_budgets(self, cfg: Config, daemon: Daemon) -> None:
        """Rate limits per bot and air time per region, not per worker."""
        from meshbot.cluster.budgets import SharedAirtime, SharedLimiter

        daemon.intake.gate.share_limits(SharedLimiter(self.shared, cfg.limits))
        daemon.pacer.ledger = SharedAirtime(self.shared, daemon.node.region)

    def radio(self, cfg: Config, store: Store, clock: Clock) -> Radio:
        """The mqtt transport on a share of the uplinks, with the shared identity and keys."""
        factory = TRANSPORTS.load(cfg.radio.transport)
        radio: Radio = factory(cfg, store, clock, cluster=self.shared, keys=self.keys)
        return radio


class _ClosesModel:
    """Closes a model that build_daemon loaded, once the daemon has stopped (a model passed in is the caller's)."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def start(self, daemon: Daemon) -> None:
        """Nothing to start: the model is loaded."""

    def quiesce(self, daemon: Daemon) -> None:
        """Nothing to refuse: the daemon's worker stops asking."""

    def stop(self, daemon: Daemon) -> None:
        """Free the model while the process is whole, not in the interpreter's teardown."""
        self.model.close()


def open_console(cfg: Config, nodes: NodeFigures | None = None) -> Console:
    """The operator's console for `[console]`, its port bound (ConfigError when it cannot be)."""
    from meshbot.console.console import Console
    from meshbot.console.history import History
    from meshbot.console.metrics import ConsoleMetrics

    worker = None
    if cfg.cluster.enabled:
        from meshbot.cluster.shared import default_worker_id

        worker = cfg.cluster.worker_id or default_worker_id()
    history = History(int(cfg.console.history_h * 60), cfg.console.show_text)
    try:
        return Console(cfg.console, ConsoleMetrics(history, worker), nodes)
    except OSError as exc:
        raise ConfigError(
            f"console: cannot listen on {cfg.console.host}:{cfg.console.port}: {exc.strerror or exc}"
        ) from None


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
    hooks: CommandHooks | None = None,
) -> Daemon:
    """Load the model, connect the radio and return a whole Daemon, not yet started.

    Raises ModelError, RadioUnavailable or ConfigError with a message for the operator; what it
    opened is closed again. `stop` set while the radio connects aborts the connect.
    """
    check_names(cfg)
    clock = clock or SystemClock()
    store = store or open_store(cfg)
    opened: list[Model | Radio | KnowledgeSource | Console] = []
    cluster: _ClusterParts | None = None
    companions: list[Companion] = []
    try:
        if cfg.cluster.enabled:
            cluster = _ClusterParts(cfg, store)
        console = open_console(cfg) if cfg.console.enabled else None
        if console is not None:
            opened.append(console)
            companions.append(console)
        if model is None:
            model = make_model(cfg.model, clock)
            opened.append(model)
            companions.append(_ClosesModel(model))
        if radio is None:
            radio = cluster.radio(cfg, store, clock) if cluster else make_radio(cfg, store, clock)
        opened.append(radio)
        directory = open_directory(cfg, store, radio, cluster.directory if cluster else None)
        inbox = Inbox()
        with _closed_on(stop, radio):
            on_packet = cluster.shared.claiming(inbox.put_packet) if cluster else inbox.put_packet
            radio.start(on_packet, inbox.put_event)
        inbox.radio_up.set()  # start() returns connected
        node = radio.local_node()
        note_own_node(directory, radio)
        if console is not None:
            console.nodes = DirectoryFigures(directory)
        mesh = MeshContext(directory, cfg.mesh_directory)
        table = cluster.memory if cluster else None
        memory = conversation_memory(cfg, store, model, table) if cfg.memory.enabled else None
        facts = DirectoryFacts(directory)
        power = power_monitor(cfg, facts, node, store, clock)
        knowledge = open_knowledge(cfg, store.path, power)
        if knowledge is not None:
            opened.append(knowledge)
        contexts = Contexts(context_sources(radio, memory, knowledge, mesh, directory))
        daemon = Daemon(
            cfg,
            radio=radio,
            model=model,
            clock=clock,
            store=store,
            node=node,
            inbox=inbox,
            contexts=contexts,
            hooks=hooks or command_hooks(memory, knowledge, mesh),
            ledger=cluster.ledger if cluster else None,
            companions=[*(cluster.companions if cluster else ()), directory, *companions, *([power] if power else [])],
            directory=directory,
            emergency=emergency_lane(cfg, facts, node, store, clock),
            power=power,
            metrics=console.metrics if console is not None else NO_METRICS,
        )
        if cluster is not None:
            cluster.share_budgets(cfg, daemon)
        return daemon
    except BaseException:
        for part in reversed(opened):
            part.close()
        if cluster is not None:
            cluster.shared.close()
        store.close()
        raise
