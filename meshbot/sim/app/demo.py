"""The demo behind `meshbot run` with no radio: a small virtual mesh, a handset that asks the bot.

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
from meshbot.sim.app.console import HELP, HandsetConsole
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.report import render_report
from meshbot.sim.app.topology import DEFAULT_TOPOLOGY, load_topology
from meshbot.sim.node.node import VirtualNode

SAMPLE_DM = "What is LoRa?"
SAMPLE_CHANNEL = "!ai how far can a mesh reach?"


class Demo:
    """A virtual mesh with the bot's radio, a relay and a handset that asks a question or two."""

    def __init__(
        self,
        topology: Path | str = DEFAULT_TOPOLOGY,
        *,
        out: TextIO | None = None,
        stdin: TextIO | None = None,
        dm_after_s: float = 2.0,
        channel_after_s: float = 25.0,
    ) -> None:
        self.topology = topology  # a bundled name or a file
        self._out = out or sys.stdout
        self._stdin = stdin or sys.stdin
        self._dm_after_s = dm_after_s
        self._channel_after_s = channel_after_s
        self.mesh: VirtualMesh | None = None
        self.console: HandsetConsole | None = None

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
        """The handset the demo types on: the first in the topology."""
        return next(n.name for n in self._mesh().topology.nodes if n.role == "handset")

    def after_daemon_started(self) -> None:
        """Show the handset's screen, send the sample questions, and offer a REPL on a terminal."""
        mesh = self._mesh()
        console = HandsetConsole(mesh, self.handset_name, self._out)
        self.console = console
        console.attach()
        handset = mesh.node(self.handset_name)
        bot = mesh.bot
        console.write(
            f"virtual mesh up: you are {self.handset_name} ({node_id(handset.node_num)}), the bot is "
            f"{node_id(bot.node_num)}. Talk to it: meshtastic --host 127.0.0.1:{handset.port} "
            f"--sendtext 'your question' --dest '{node_id(bot.node_num)}'"
        )
        bot_num = bot.node_num
        mesh.scheduler.call_later(self._dm_after_s, lambda: self._dm_once_keyed(console, handset, bot_num))
        if self._stdin.isatty():
            console.write(f"typing a line here sends it as a DM to the bot ({HELP})")
            threading.Thread(target=console.run, args=(self._stdin,), name="demo-console", daemon=True).start()

    def _dm_once_keyed(self, console: HandsetConsole, handset: VirtualNode, bot_num: int, tries: int = 60) -> None:
        """Send the sample DM once the handset has the bot's key: a DM sealed without it is refused (legacy)."""
        keyed = any(n.num == bot_num and n.public_key for n in handset.known_nodes())
        if keyed or tries <= 0:
            console.send(SAMPLE_DM, to=bot_num)
            # The channel question follows the DM, never within the node's 2 s text rate limit of it.
            wait_s = max(self._channel_after_s - self._dm_after_s, limits.TEXT_RATE_LIMIT_S + 0.5)
            self._mesh().scheduler.call_later(wait_s, lambda: console.send(SAMPLE_CHANNEL, to=limits.BROADCAST_NUM))
        else:
            self._mesh().scheduler.call_later(1.0, lambda: self._dm_once_keyed(console, handset, bot_num, tries - 1))

    def stop(self) -> None:
        """Stop the mesh and print its report."""
        if self.mesh is None:
            return
        if self.console is not None:
            self.console.detach()
        report = self.mesh.report()
        self.mesh.stop()
        self._out.write(render_report(report) + "\n")
        self._out.flush()

    def _mesh(self) -> VirtualMesh:
        if self.mesh is None:
            raise RuntimeError("Demo.start() first")
        return self.mesh
