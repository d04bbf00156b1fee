"""How big and how fast the virtual mesh runs: nodes, frames per simulated hour, speed-up, CPU.

Scripted traffic, no model: every handset sends a text now and then (a DM to the bot, or a
channel message, some with the `!ai` trigger); a scripted bot answers each question with three
~190-byte fragments 3 s apart, as the daemon would. Two ways to run each mesh:
  manual   a VirtualClock stepped as fast as the CPU allows (deterministic);
  scaled   the threaded mesh on a ScaledClock, TCP ports open, as `meshbot sim` runs it.

    .venv/bin/python bench/mesh_scale.py [--hours 1] [--sizes 20,50,100] [--scale 200] [--scaled-minutes 10]

Not a test: wall-clock and CPU figures vary by machine.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshbot.core import limits
from meshbot.core.clock import ScaledClock
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.topology import Topology, load_topology, parse_topology
from meshbot.sim.node.records import HeardPacket
from meshbot.sim.rules.channel import distance_km

CITY = "city"  # the bundled topology (meshbot/sim/topologies/city.toml)
BOT = 0x0BB0_0001
MEAN_GAP_S = 600.0  # each handset sends about every 10 minutes
ANSWER_FRAGMENTS = 3
ANSWER_GAP_S = 3.0
FRAGMENT = "x" * 185


@dataclass
class Row:
    label: str
    mode: str
    nodes: int
    sim_s: float
    frames: int
    texts_sent: int
    deliveries: int
    acks: int
    naks: int
    collisions: int
    wall_s: float
    cpu_s: float

    def cells(self) -> list[str]:
        hours = self.sim_s / 3600.0
        return [
            self.label,
            self.mode,
            str(self.nodes),
            f"{self.sim_s / 60:.0f}",
            str(self.frames),
            f"{self.frames / hours:.0f}",
            f"{self.texts_sent}/{self.deliveries}",
            f"{self.acks}/{self.naks}",
            str(self.collisions),
            f"{self.wall_s:.1f}",
            f"{self.sim_s / self.wall_s:.0f}x",
            f"{self.cpu_s:.1f}",
            f"{100 * self.cpu_s / self.wall_s:.0f}%",
        ]


HEADER = [
    "mesh",
    "mode",
    "nodes",
    "sim min",
    "frames",
    "frames/sim h",
    "texts out/in",
    "ACK/NAK",
    "collisions",
    "wall s",
    "speed-up",
    "CPU s",
    "CPU",
]


def random_topology(count: int, seed: int) -> Topology:
    """`count` nodes scattered over a square sized for ~6 neighbours each; one bot, 1 in 5 relays."""
    for attempt in range(100):
        rng = random.Random(seed * 1000 + attempt)
        side_km = math.sqrt(count / 0.6)  # ~0.6 nodes per km²
        points = [(rng.uniform(0, side_km), rng.uniform(0, side_km)) for _ in range(count)]
        positions = [(52.0 + y / 111.0, 5.0 + x / 68.0) for x, y in points]
        roles = ["bot"] + ["relay" if i % 5 == 0 else "handset" for i in range(1, count)]
        reach = {"relay": 4.0, "bot": 3.0, "handset": 2.2}
        names = [f"n{i:03d}" for i in range(count)]
        neighbours: dict[str, list[str]] = {n: [] for n in names}
        for i in range(count):
            for j in range(i + 1, count):
                if distance_km(positions[i], positions[j]) <= min(reach[roles[i]], reach[roles[j]]) + 0.8:
                    neighbours[names[i]].append(names[j])
        if _connected(names, neighbours):
            nodes = [
                {
                    "name": names[i],
                    "num": BOT if i == 0 else 0x0C00_0000 + i,
                    "role": roles[i],
                    "position": list(positions[i]),
                    "neighbours": neighbours[names[i]],
                }
                for i in range(count)
            ]
            mesh = {"seed": seed, "modem_preset": "LONG_FAST", "region": "EU_868", "hop_limit": 3}
            return parse_topology({"mesh": mesh, "nodes": nodes})
    raise RuntimeError(f"no connected layout of {count} nodes")


def _connected(names: list[str], neighbours: dict[str, list[str]]) -> bool:
    links: dict[str, set[str]] = {n: set() for n in names}
    for a, bs in neighbours.items():
        for b in bs:
            links[a].add(b)
            links[b].add(a)
    seen, todo = {names[0]}, [names[0]]
    while todo:
        for other in links[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return len(seen) == len(names)


def script_traffic(mesh: VirtualMesh, duration_s: float, seed: int) -> None:
    """Schedule every handset's texts for `duration_s`, and make the bot answer questions."""
    rng = random.Random(seed)
    bot = mesh.bot
    for spec in mesh.topology.nodes:
        if spec.role != "handset":
            continue
        node = mesh.node(spec.name)
        at = rng.expovariate(1 / MEAN_GAP_S)
        while at < duration_s:
            dm = rng.random() < 0.6
            text = ("what is " if dm else rng.choice(["!ai how far ", "hello all, "])) + "y" * rng.randint(10, 90)
            to = bot.node_num if dm else limits.BROADCAST_NUM
            mesh.scheduler.call_later(at, lambda n=node, t=text, d=to: n.send_text(t, to=d))
            at += max(rng.expovariate(1 / MEAN_GAP_S), limits.TEXT_RATE_LIMIT_S + 1)

    free_at = [0.0]  # one answer at a time, fragments ANSWER_GAP_S apart, as the daemon's sender paces them

    def answer(heard: HeardPacket) -> None:
        if heard.portnum != "TEXT_MESSAGE_APP" or heard.sender == bot.node_num:
            return
        is_dm = heard.to == bot.node_num
        if not is_dm and not (heard.text or "").startswith("!ai"):
            return
        now = mesh.clock.now()
        start = max(now + 1.0, free_at[0])
        for i in range(ANSWER_FRAGMENTS):
            text = f"{i + 1}/{ANSWER_FRAGMENTS} {FRAGMENT}"
            to = heard.sender if is_dm else limits.BROADCAST_NUM
            mesh.scheduler.call_later(
                start - now + i * ANSWER_GAP_S,
                lambda t=text, d=to, r=heard.packet_id: bot.send_text(t, to=d, reply_id=r),
            )
        free_at[0] = start + ANSWER_FRAGMENTS * ANSWER_GAP_S

    bot.received_log.subscribe(answer)


def run(label: str, topology: Topology, mode: str, duration_s: float, scale: float) -> Row:
    """One mesh, one mode, `duration_s` simulated seconds of traffic."""
    wall0, cpu0 = time.monotonic(), time.process_time()
    if mode == "manual":
        mesh = VirtualMesh(topology, manual=True)
    else:
        mesh = VirtualMesh(topology, clock=ScaledClock(scale))
    mesh.start()
    mesh.settle(timeout_s=600)
    script_traffic(mesh, duration_s, topology.mesh.seed)
    if mode == "manual":
        mesh.run_for(duration_s)
    else:
        time.sleep(duration_s / scale)
    report = mesh.report()
    mesh.stop()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    return Row(
        label,
        mode,
        len(topology.nodes),
        report.sim_s,
        report.frames_total,
        report.texts_sent,
        report.deliveries,
        report.acks + report.implicit_acks,
        sum(report.naks.values()),
        report.collisions,
        wall,
        cpu,
    )


def print_table(rows: list[Row]) -> None:
    cells = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    for line in cells:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=False)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours per manual run")
    parser.add_argument("--sizes", default="50,100", help="random meshes to run besides the city, e.g. 50,100")
    parser.add_argument("--scale", type=float, default=200.0, help="time scale of the threaded runs")
    parser.add_argument("--scaled-minutes", type=float, default=10.0, help="simulated minutes per threaded run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # full queues and duty-cycle refusals are part of the load
    meshes: list[tuple[str, Topology]] = [("city", load_topology(CITY))]
    meshes += [(f"random{n}", random_topology(n, seed=n)) for n in (int(s) for s in args.sizes.split(",") if s)]
    rows = []
    for label, topology in meshes:
        rows.append(run(label, topology, "manual", args.hours * 3600, 1.0))
    for label, topology in meshes:
        rows.append(run(label, topology, "scaled", args.scaled_minutes * 60, args.scale))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
