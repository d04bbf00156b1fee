"""The demo behind `meshbot run` with no radio: a small virtual mesh, a neighbour's handset that asks the bot.

`runner.py` starts it before the daemon (which connects to `bot_port`), calls
`after_daemon_started()` once the daemon is up, and `stop()` at the end, which prints the report.
The topology is the config's `[sim] topology` (MESHBOT_SIM_TOPOLOGY): the bundled "demo" by default.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO

from meshbot.core import limits
from meshbot.core.ids import node_id
from meshbot.sim.app.commands import ask_command
from meshbot.sim.app.console import HandsetConsole
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.report import render_report
from meshbot.sim.app.topology import DEFAULT_TOPOLOGY, load_topology
from meshbot.sim.node.records import HeardPacket
from meshbot.sim.rules.firmware import is_broadcast

SAMPLE_DM = "What is LoRa?"
SAMPLE_CHANNEL = "!ai how far can a mesh reach?"
# Once the nodes have shared their positions and telemetry (the demo topology's modules run 30x fast):
SAMPLE_NODES = "!nodes"
SAMPLE_MESH = "What is the battery of RLY?"


class NeighbourScreen(HandsetConsole):
    """The demo's sample asker: its DMs and their answers, each line marked as seen on that handset."""

    def write(self, line: str) -> None:
        """Print one line, marked with whose screen it is on."""
        super().write(f"({self.name}'s screen) {line}")

    def describe(self, heard: HeardPacket) -> str | None:
        """As the handset shows it, but no channel traffic: the user's own screen shows that already."""
        if heard.error is None and is_broadcast(heard.to):
            return None
        return super().describe(heard)


class Demo:
    """A virtual mesh with the bot's radio, a relay, the user's handset, and a neighbour who asks a question or two."""

    def __init__(
        self,
        topology: Path | str = DEFAULT_TOPOLOGY,
        *,
        out: TextIO | None = None,
        stdin: TextIO | None = None,
        dm_after_s: float = 2.0,
        channel_after_s: float = 25.0,
        nodes_after_s: float = 45.0,
        mesh_after_s: float = 60.0,
    ) -> None:
        self.topology = topology  # a bundled name or a file
        self._out = out or sys.stdout
        self._stdin = stdin or sys.stdin
        self._dm_after_s = dm_after_s
        self._channel_after_s = channel_after_s
        self._nodes_after_s = nodes_after_s
        self._mesh_after_s = mesh_after_s
        self.mesh: VirtualMesh | None = None
        self.console: HandsetConsole | None = None  # the user's handset
        self.asker: HandsetConsole | None = None  # the neighbour who asks the sample questions

    def start(self) -> None:
        """Start the mesh (TopologyError if unusable); its nodes announce themselves while the daemon connects."""
        self.mesh = VirtualMesh(load_topology(self.topology))
        self.mesh.start()

    @property
    def bot_port(self) -> int:
        """The TCP port of the bot's node, for the daemon's `--host`."""
        return self._mesh().bot.port

    @property
    def handset_name(self) -> str:
        """The handset the user types on: the first in the topology."""
        return self._handsets()[0]

    @property
    def asker_name(self) -> str:
        """The handset that asks the sample questions: the second, so the user's allowance stays whole."""
        handsets = self._handsets()
        return handsets[1] if len(handsets) > 1 else handsets[0]

    def _handsets(self) -> list[str]:
        return [n.name for n in self._mesh().topology.nodes if n.role == "handset"]

    def after_daemon_started(self) -> None:
        """Show the handset's screen, have the neighbour ask the sample questions, and offer a REPL on a terminal."""
        mesh = self._mesh()
        console = HandsetConsole(mesh, self.handset_name, self._out)
        self.console = console
        console.attach()
        handset = mesh.node(self.handset_name)
        bot_num = mesh.bot.node_num
        asker = self._sample_asker(console)
        console.write(
            f"virtual mesh up: you are {self.handset_name} ({node_id(handset.node_num)}), the bot is "
            f"{node_id(bot_num)}. {self._who_asks(asker)} Talk to it from another terminal: "
            f"{ask_command(handset.port, 'your question', node_id(bot_num))}"
        )
        mesh.scheduler.call_later(self._dm_after_s, lambda: self._dm_once_keyed(asker, bot_num))
        # What the bot knows about its mesh: a command answered from the node directory, then a question about it.
        mesh.scheduler.call_later(self._nodes_after_s, lambda: asker.send(SAMPLE_NODES, to=bot_num))
        mesh.scheduler.call_later(self._mesh_after_s, lambda: asker.send(SAMPLE_MESH, to=bot_num))
        if self._stdin.isatty():  # the console says itself what typing does ("you are Alice ...; type a line ...")
            threading.Thread(target=console.run, args=(self._stdin,), name="demo-console", daemon=True).start()

    def _sample_asker(self, console: HandsetConsole) -> HandsetConsole:
        """The console the sample questions are sent from: the neighbour's screen, or the user's if alone."""
        if self.asker_name == self.handset_name:
            return console  # a topology with one handset: the samples come out of the user's allowance
        asker = NeighbourScreen(self._mesh(), self.asker_name, self._out)
        asker.attach()
        self.asker = asker
        return asker

    def _who_asks(self, asker: HandsetConsole) -> str:
        if asker.name == self.handset_name:
            return "You ask it a few sample questions first."
        return f"{asker.name} ({node_id(asker.node.node_num)}) asks it a few sample questions; your own allowance is whole."

    def _dm_once_keyed(self, console: HandsetConsole, bot_num: int, tries: int = 60) -> None:
        """Send the sample DM once the handset has the bot's key: a DM sealed without it is refused (legacy)."""
        keyed = any(n.num == bot_num and n.public_key for n in console.node.known_nodes())
        if keyed or tries <= 0:
            console.send(SAMPLE_DM, to=bot_num)
            # The channel question follows the DM, never within the node's 2 s text rate limit of it.
            wait_s = max(self._channel_after_s - self._dm_after_s, limits.TEXT_RATE_LIMIT_S + 0.5)
            self._mesh().scheduler.call_later(wait_s, lambda: console.send(SAMPLE_CHANNEL, to=limits.BROADCAST_NUM))
        else:
            self._mesh().scheduler.call_later(1.0, lambda: self._dm_once_keyed(console, bot_num, tries - 1))

    def stop(self) -> None:
        """Stop the mesh and print its report."""
        if self.mesh is None:
            return
        for console in (self.console, self.asker):
            if console is not None:
                console.detach()
        report = self.mesh.report()
        self.mesh.stop()
        self._out.write(render_report(report) + "\n")
        self._out.flush()

    def _mesh(self) -> VirtualMesh:
        if self.mesh is None:
            raise RuntimeError("Demo.start() first")
        return self.mesh
