"""The node directory with 2,000 nodes heard: memory (RSS) and the time of what the bot does with it.

    python -m bench.bench_directory [--nodes 2000] [--reports 20]

Every node sends NodeInfo, Position, device Telemetry and NeighborInfo, then `--reports` more packets each
(the SNR, hops and time of every packet heard), through the same `NodeReport`s the transports make. 10% more
nodes than `max_nodes` are heard, so eviction runs too. Then: lookups by number and by name, the !nodes, !node
and !mesh replies, a mesh question's facts block, saving to and loading from the store. Prints a table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from meshbot.core.config import load_config
from meshbot.core.directory import DeviceMetrics, Heard, Neighbor, NodeReport, NodeUser, Position
from meshbot.service.directory import MeshDirectory
from meshbot.service.mesh_commands import MeshCommands
from meshbot.service.mesh_context import MeshContext
from meshbot.storage.directory import DirectoryTable
from meshbot.storage.store import Store

BOT = 0x0BB0_0001


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def name_of(i: int) -> str:
    return f"N{i:03d}"[-4:] if i < 10_000 else f"{i:04x}"[-4:]


def reports(count: int, per_node: int, now: float, rng: random.Random) -> Iterator[NodeReport]:
    """What a busy mesh sends: each node's NodeInfo, Position, Telemetry, NeighborInfo, then plain packets.

    Made as they are heard (a window of 100 nodes at a time, shuffled), so the reports' own memory is not
    counted as the directory's.
    """
    out: list[NodeReport] = []
    for i in range(count):
        num = 0x1000_0000 + i
        at = now - rng.uniform(0, 86_400)
        out.append(
            NodeReport(
                num,
                Heard(at, rng.uniform(-20, 12), -rng.randint(60, 125), rng.randint(0, 7)),
                user=NodeUser(name_of(i), f"Node number {i}", "HELTEC_V3", "CLIENT"),
            )
        )
        pos = Position(
            473_000_000 + rng.randint(-5_000_000, 5_000_000),
            85_000_000 + rng.randint(-5_000_000, 5_000_000),
            rng.randint(300, 900),
            rng.choice((32, 16, 13)),
            at,
        )
        out.append(NodeReport(num, Heard(at + 1, rng.uniform(-20, 12), -90, 1), position=pos))
        out.append(
            NodeReport(
                num, Heard(at + 2, 3.0, -90, 1), device=DeviceMetrics(rng.randint(1, 101), 3.9, 12.0, 1.1, 3600, at + 2)
            )
        )
        neighbours = tuple(Neighbor(0x1000_0000 + rng.randrange(count), rng.uniform(-10, 10)) for _ in range(5))
        out.append(NodeReport(num, Heard(at + 3, 2.0, -95, 2), neighbors=neighbours))
        out.extend(NodeReport(num, Heard(at + 4 + k, rng.uniform(-20, 12), -100, 2)) for k in range(per_node))
        if i % 100 == 99 or i == count - 1:
            rng.shuffle(out)
            yield from out
            out = []


def timed(label: str, runs: int, job: Callable[[], object], rows: list[tuple[str, str]]) -> None:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    rows.append(
        (
            label,
            f"median {statistics.median(times) * 1e6:,.1f} µs, p95 {sorted(times)[int(runs * 0.95) - 1] * 1e6:,.1f} µs ({runs} runs)",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--reports", type=int, default=20, help="plain packets heard per node")
    args = parser.parse_args()
    rng = random.Random(7)
    now = time.time()
    cfg = load_config(overrides={"mesh_directory.max_nodes": args.nodes}, environ={})
    total = int(args.nodes * 1.1)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(str(Path(tmp) / "state.db"))
        base = rss_mb()
        directory = MeshDirectory(cfg.mesh_directory, DirectoryTable(store))
        directory.note(
            NodeReport(
                BOT,
                user=NodeUser("BOT", "meshbot"),
                position=Position(473_769_000, 85_417_000),
                device=DeviceMetrics(90, 4.0, 14.0, 2.0, at=now),
                is_self=True,
            )
        )
        took, count = 0.0, 0
        for report in reports(total, args.reports, now, rng):
            start = time.perf_counter()
            directory.note(report)
            took += time.perf_counter() - start
            count += 1
        kept = f"kept {len(directory):,} (max_nodes {args.nodes:,})"
        rows.append(("reports heard", f"{count:,} for {total:,} nodes; {kept}"))
        rows.append(("note() per report", f"{took / count * 1e6:,.1f} µs"))
        rows.append(
            (
                "RSS of the directory",
                f"{rss_mb() - base:,.1f} MB ({(rss_mb() - base) * 1e6 / len(directory):,.0f} B per node)",
            )
        )
        some = [r.node for r in directory.records()[::97]]
        timed("record(node)", 2000, lambda: directory.record(rng.choice(some)), rows)
        timed("find(short name)", 200, lambda: directory.find(name_of(rng.randrange(args.nodes))), rows)
        commands = MeshCommands(cfg, directory, 198)
        asker = some[3]
        timed("!nodes reply", 100, lambda: commands.nodes(asker, True), rows)
        timed("!node NAME reply", 100, lambda: commands.node(asker, True, name_of(17)), rows)
        timed("!mesh reply", 100, lambda: commands.mesh(asker, True), rows)
        mesh = MeshContext(directory, cfg.mesh_directory)
        timed(
            "mesh facts block (names a node)",
            100,
            lambda: mesh.block_for(f"battery of {name_of(17)}?", asker, True),
            rows,
        )
        timed(
            "non-mesh question (no block)",
            100,
            lambda: mesh.block_for("what is the capital of France?", asker, True),
            rows,
        )
        start = time.perf_counter()
        directory.flush()
        rows.append(("save all to the store", f"{(time.perf_counter() - start) * 1e3:,.0f} ms"))
        start = time.perf_counter()
        again = MeshDirectory(cfg.mesh_directory, DirectoryTable(store))
        rows.append(("load at start", f"{(time.perf_counter() - start) * 1e3:,.0f} ms, {len(again):,} nodes"))
        store.close()
    width = max(len(label) for label, _ in rows)
    print(f"node directory, {args.nodes:,} nodes")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


if __name__ == "__main__":
    main()
