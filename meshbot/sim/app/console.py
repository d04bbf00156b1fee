"""A person at a virtual handset: type a line to send it, see what arrives as the handset shows it.

Plain text is a DM to the bot; ``/ch N text`` a message on channel N; ``/dm NAME text`` a DM to any
node; ``/nodes`` the handset's node list; ``/report`` the mesh report; ``/quit`` ends. Arrivals are
printed from the mesh's thread as they come: time, sender, hops, bytes and air time.
"""

from __future__ import annotations

import threading
from typing import TextIO

from meshbot.core import limits
from meshbot.core.ids import node_id
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.render import clock_text, destination_name, format_handset_line, hops_text
from meshbot.sim.app.report import render_report
from meshbot.sim.node.records import HeardPacket

HELP = "type a line to DM the bot; /ch N text: channel N; /dm NAME text: DM a node; " "/nodes; /report; /help; /quit"
QUIET_PORTS = frozenset({"NODEINFO_APP"})  # the apps update their node list, not the chat


class HandsetConsole:
    """Drives one handset node of a mesh from text lines; writes what its user would see to `out`."""

    def __init__(self, mesh: VirtualMesh, handset: str, out: TextIO) -> None:
        self.mesh = mesh
        self.node = mesh.node(handset)
        self.name = handset
        self._out = out
        self._write_lock = threading.Lock()
        self._sent_to: dict[int, int] = {}  # packet id -> destination, to name ACKs

    # ----- arrivals ----------------------------------------------------------------------------

    def attach(self) -> None:
        """Start printing what the handset receives."""
        self.node.received_log.subscribe(self._on_heard)

    def detach(self) -> None:
        """Stop printing arrivals."""
        self.node.received_log.unsubscribe(self._on_heard)

    def _on_heard(self, heard: HeardPacket) -> None:
        line = self.describe(heard)
        if line:
            self.write(line)

    def describe(self, heard: HeardPacket) -> str | None:
        """The line a handset shows for a packet, or None for one it shows no line for."""
        at = self.mesh.wall_time(heard.at)
        if heard.error is not None:
            return self._status_line(heard, at)
        if heard.portnum in QUIET_PORTS:
            return None
        text = heard.text if heard.text is not None else f"<{heard.portnum}, {len(heard.payload)} B>"
        recipient = destination_name(heard.to, heard.channel, you=self.node.node_num, names=self.mesh.names)
        return format_handset_line(
            at=at,
            sender=self.mesh.name_of(heard.sender),
            recipient=recipient,
            text=text,
            hops=heard.hops,
            size_bytes=len(heard.payload),
            airtime_s=heard.airtime_s,
        )

    def _status_line(self, heard: HeardPacket, at: float) -> str:
        stamp = f"[{clock_text(at)}]"
        dest = self._sent_to.get(heard.request_id)
        where = f" to {self.mesh.name_of(dest)}" if dest is not None else ""
        if heard.error != "NONE":
            return f"{stamp} ✗ message {heard.request_id:08x}{where} failed: {heard.error}"
        if heard.sender == self.node.node_num:
            return f"{stamp} ✓ message {heard.request_id:08x}{where} relayed by a neighbour (implicit ACK)"
        via = hops_text(heard.hops)
        return (
            f"{stamp} ✓✓ message {heard.request_id:08x} delivered: ACK from {self.mesh.name_of(heard.sender)} ({via})"
        )

    def write(self, line: str) -> None:
        """Print one line (thread-safe)."""
        with self._write_lock:
            self._out.write(line + "\n")
            self._out.flush()

    # ----- input --------------------------------------------------------------------------------

    def run(self, inp: TextIO) -> None:
        """Read lines until EOF or /quit."""
        self.write(f"you are {self.name} ({node_id(self.node.node_num)}); {HELP}")
        for raw in inp:
            if not self.handle(raw.rstrip("\n")):
                return

    def handle(self, line: str) -> bool:
        """Act on one typed line; False when the user asked to quit."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            bot = self.mesh.bot_num
            if bot is None:
                self._out.write("the bot is not up yet\n")
                self._out.flush()
                return True
            self.send(line, to=bot)
            return True
        command, _, rest = line.partition(" ")
        if command == "/quit":
            return False
        if command == "/ch":
            index, _, text = rest.strip().partition(" ")
            if not index.isdigit() or not text.strip():
                self.write("usage: /ch N text")
            else:
                self.send(text.strip(), to=limits.BROADCAST_NUM, channel=int(index))
        elif command == "/dm":
            self._dm(rest.strip())
        elif command == "/nodes":
            self.write(self.nodes_text())
        elif command == "/report":
            self.write(render_report(self.mesh.report()))
        else:
            self.write(HELP)
        return True

    def _dm(self, rest: str) -> None:
        name, _, text = rest.partition(" ")
        try:
            dest = self.mesh.node(name).node_num
        except KeyError as exc:
            self.write(str(exc.args[0]))
            return
        if text.strip():
            self.send(text.strip(), to=dest)
        else:
            self.write("usage: /dm NAME text")

    def send(self, text: str, *, to: int, channel: int = 0) -> int | None:
        """Send as the handset's app would: refuse over the apps' 200-byte cap, DMs want an ACK."""
        size = len(text.encode("utf-8"))
        if size > limits.APP_TEXT_LIMIT_BYTES:
            self.write(f"too long: {size} bytes (the apps allow {limits.APP_TEXT_LIMIT_BYTES})")
            return None
        packet_id = self.node.send_text(text, to=to, channel=channel)
        self._sent_to[packet_id] = to
        recipient = destination_name(to, channel, names=self.mesh.names)
        self.write(
            format_handset_line(
                at=self.mesh.wall_time(self.mesh.clock.now()),
                sender="you",
                recipient=recipient,
                text=text,
                note=f"id {packet_id:08x}",
            )
        )
        return packet_id

    def nodes_text(self) -> str:
        """The handset's node list: name, id, hops away, SNR."""
        lines = [f"{'name':<16} {'id':<10} {'hops':>4} {'snr':>6}"]
        for ident in self.node.known_nodes():
            me = ident.num == self.node.node_num
            hops = "self" if me else str(ident.hops_away)
            snr = "" if me else f"{ident.snr:.1f}"
            lines.append(f"{ident.long_name[:16]:<16} {node_id(ident.num):<10} {hops:>4} {snr:>6}")
        return "\n".join(lines)
