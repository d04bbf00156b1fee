"""A virtual mesh: the nodes of a topology, each a `VirtualNode` on its own 127.0.0.1 port, on one
`MeshAir`, with one scheduler and one clock.

Two ways to run it:
- threaded (default): a `ScaledClock(topology time_scale)`; TCP clients such as the `meshtastic`
  CLI or the bot's daemon talk to the nodes while the mesh runs `time_scale` times real time;
- manual: a `VirtualClock` that moves only in `run_for`, a deterministic discrete-event run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from meshbot.core.clock import ScaledClock, VirtualClock
from meshbot.core.domain import Clock
from meshbot.sim.air.mesh import MeshAir
from meshbot.sim.air.scheduler import Scheduler
from meshbot.sim.app.report import MeshReport, build_report
from meshbot.sim.app.topology import Topology
from meshbot.sim.node.node import VirtualNode
from meshbot.sim.rules import firmware as fw

if TYPE_CHECKING:
    from meshbot.sim.node.mqtt_gateway import MqttGateway

logger = logging.getLogger(__name__)

ANNOUNCE_GAP_S = 0.5  # simulated pause between one node's NodeInfo flood and the next
SETTLE_STEP_S = 1.0
SETTLE_LIMIT_S = 3600.0


class VirtualMesh:
    """The nodes of `topology` on a simulated channel. Start it once; `stop` ends it."""

    def __init__(
        self,
        topology: Topology,
        *,
        clock: Clock | None = None,
        manual: bool = False,
        host: str = "127.0.0.1",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.topology = topology
        mesh = topology.mesh
        self.clock: Clock = clock or (VirtualClock() if manual else ScaledClock(mesh.time_scale))
        self.scheduler = Scheduler("mesh-timer", self.clock, manual=manual)
        self.air = MeshAir(
            links=topology.link_table(),
            roles={n.node_num: n.role for n in topology.nodes},
            modem_preset=mesh.modem_preset,
            region=mesh.region,
            seed=mesh.seed,
            scheduler=self.scheduler,
            wall_clock=wall_clock,
        )
        self._nodes: dict[str, VirtualNode] = {
            spec.name: VirtualNode(
                spec.node_num,
                long_name=spec.display_long_name,
                short_name=spec.display_short_name,
                host=host,
                port=spec.port,
                modem_preset=mesh.modem_preset,
                region=mesh.region,
                hop_limit=mesh.hop_limit,
                clock=self.clock,
                channel_names=mesh.channels,
                air=self.air,
                wall_clock=wall_clock,
                scheduler=self.scheduler,
                ignore_mqtt=spec.ignore_mqtt,
                ok_to_mqtt=spec.ok_to_mqtt,
                position=spec.position,
            )
            for spec in topology.nodes
        }
        self.gateways = self._make_gateways()
        self.remote_bot: int | None = None  # a bot with no radio here (it joins through a gateway's broker)
        self._names = {spec.node_num: spec.name for spec in topology.nodes}
        self._announced = threading.Event()
        self._pending_announcements: list[VirtualNode] = []
        self._started_sim = 0.0
        self._started_wall = 0.0
        self._started_cpu = 0.0
        self._epoch = wall_clock()
        self._wall_clock = wall_clock
        self._running = False

    # ----- lifecycle -------------------------------------------------------------------------

    def _make_gateways(self) -> list[MqttGateway]:
        broker = self.topology.mesh.mqtt
        if broker is None:
            return []
        from meshbot.sim.node.mqtt_gateway import MqttGateway  # paho and the packet crypto: only when used

        return [MqttGateway(self._nodes[spec.name], broker, spec.mqtt) for spec in self.topology.nodes if spec.mqtt]

    def start(self, *, announce: bool = True) -> None:
        """Open every node's port, start the clock's timers and (by default) the NodeInfo floods."""
        self._started_sim = self.clock.now()
        self._epoch = self._wall_clock()
        self._started_wall = time.monotonic()
        self._started_cpu = time.process_time()
        self.scheduler.start()
        for node in self._nodes.values():
            node.start()
        for gateway in self.gateways:
            gateway.start()
        self._running = True
        if announce:
            self._schedule_announcements()
        else:
            self._announced.set()
        logger.info(
            "mesh up: %d nodes, %s %s, seed %d",
            len(self._nodes),
            self.topology.mesh.region,
            self.topology.mesh.modem_preset,
            self.topology.mesh.seed,
        )

    def _schedule_announcements(self) -> None:
        # One NodeInfo flood at a time, each once the previous has died out (and a short pause),
        # so that every node hears every other: overlapping floods collide at hidden terminals.
        self._pending_announcements = list(self._nodes.values())
        self.scheduler.call_later(0.0, self._announce_next)

    def _announce_next(self) -> None:
        if not self._running or not self._pending_announcements:
            self._announced.set()
            self._start_modules()
            return
        self._pending_announcements.pop(0).announce()
        self.air.when_idle(lambda: self.scheduler.call_later(ANNOUNCE_GAP_S, self._announce_next))

    def _start_modules(self) -> None:
        """Position, Telemetry and NeighborInfo from every node from now on (when the topology asks for them)."""
        mesh = self.topology.mesh
        if mesh.modules:
            for node in self._nodes.values():
                node.start_modules(mesh.modules_speedup, seed=mesh.seed ^ node.node_num)

    def stop(self) -> None:
        """Close every node and stop the timers."""
        if not self._running:
            return
        self._running = False
        for gateway in self.gateways:
            gateway.stop()
        for node in self._nodes.values():
            node.stop()
        self.scheduler.close()

    def __enter__(self) -> VirtualMesh:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- nodes -------------------------------------------------------------------------------

    @property
    def nodes(self) -> dict[str, VirtualNode]:
        """Every node by its topology name."""
        return dict(self._nodes)

    def __iter__(self) -> Iterator[VirtualNode]:
        return iter(self._nodes.values())

    @property
    def bot_num(self) -> int | None:
        """The bot's node number: its radio's here, else the remote bot's once known."""
        if any(spec.role == "bot" for spec in self.topology.nodes):
            return self.topology.bot.node_num
        return self.remote_bot

    def node(self, name: str) -> VirtualNode:
        """The node called `name` (KeyError with the known names if none)."""
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; the mesh has {', '.join(self._nodes)}") from None

    @property
    def bot(self) -> VirtualNode:
        """The bot's radio."""
        return self._nodes[self.topology.bot.name]

    def name_of(self, num: int) -> str:
        """A node's topology name, or its ``!%08x`` id."""
        return self._names.get(num, fw.node_id(num))

    @property
    def names(self) -> dict[int, str]:
        """Topology names by node number."""
        return dict(self._names)

    def wall_time(self, at: float) -> float:
        """Epoch seconds of the simulated instant `at` (clock seconds), as a handset's clock would show it."""
        return self._epoch + (at - self._started_sim)

    # ----- running -----------------------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        """Manual mode: run the mesh for `seconds` of simulated time."""
        self.scheduler.run_for(seconds)

    def settle(self, timeout_s: float = 30.0) -> bool:
        """Let the start-up announcements finish and the air fall quiet; True once it has.

        Manual mode steps simulated time (up to an hour); threaded mode waits up to `timeout_s` real seconds.
        """
        if self.scheduler.manual:
            waited = 0.0
            while not (self._announced.is_set() and self.air.idle()) and waited < SETTLE_LIMIT_S:
                self.scheduler.run_for(SETTLE_STEP_S)
                waited += SETTLE_STEP_S
            return self._announced.is_set() and self.air.idle()
        deadline = time.monotonic() + timeout_s
        if not self._announced.wait(timeout_s):
            return False
        return self.air.wait_idle(max(deadline - time.monotonic(), 0.0))

    def report(self) -> MeshReport:
        """The mesh report so far."""
        nums = list(self._names)
        return build_report(
            names=self._names,
            roles={n.node_num: n.role for n in self.topology.nodes},
            stats=self.air.node_stats(),
            sent={num: self._nodes[self._names[num]].sent for num in nums},
            received={num: self._nodes[self._names[num]].received for num in nums},
            sim_s=self.clock.now() - self._started_sim,
            wall_s=time.monotonic() - self._started_wall,
            cpu_s=time.process_time() - self._started_cpu,
        )
