"""One simulated hour of steady load on the virtual mesh: do we ever get NAKed?

Ten handsets each ask the bot a question by DM every 30 s (1,200 questions an hour), through two
relays. The real daemon (policy, queue, worker, pacer, sender, real meshtastic TCPInterface)
answers on the mesh's ScaledClock. The model is scripted (answers of 300-700 bytes streamed word
by word) because the question is pacing, and a real 135M model run 20x faster than real time
would answer almost nothing. Prints the NAKs the bot's node returned, by reason, and what the
daemon did with the load. Not a test.

    .venv/bin/python bench/soak.py [--preset LONG_FAST] [--region EU_868] [--scale 20] [--hours 1]

With ``--askers N`` it measures memory instead: N distinct nodes take turns asking, one question every
``--ask-every`` simulated seconds, through one virtual node whose neighbours ACK every DM; the process's
resident memory (the daemon and the `meshtastic` library; the virtual node runs in a process of its own) is
printed every ``--sample-every`` seconds.

    .venv/bin/python bench/soak.py --askers 500 --hours 2 --preset SHORT_TURBO --region US

``--model bundled`` answers with the bundled GGUF instead (run it slower, ``--scale 3``, so the model keeps up):
its weights, its context and the saved KV states (`model.kv_cache_mb`) are then in the figure too.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import logging
import multiprocessing
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prompts import PROMPTS
from meshbot.app.compose import build_daemon
from meshbot.core.clock import ScaledClock
from meshbot.core.config import load_config
from meshbot.core.domain import Generation, GenerationStats
from meshbot.core.events import Event
from meshbot.models.base import BaseModel
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.topology import parse_topology
from meshbot.sim.node.node import VirtualNode

BOT = 0x0BB0_0001
HANDSETS = 10
ASK_EVERY_S = 30.0
WORDS = (
    "LoRa radios trade speed for range, so a short message can cross many kilometres of open "
    "country while using very little power, and every node in the mesh repeats what it hears."
).split()


class ScriptedModel(BaseModel):
    """Answers of 300-700 bytes, streamed one word per 30 ms of simulated time."""

    name = "scripted"

    def __init__(self, clock: ScaledClock, seed: int = 1) -> None:
        self._clock = clock
        self._rng = random.Random(seed)

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        target = self._rng.randint(300, 700)
        produced, first = 0, None
        started = self._clock.now()
        while produced < target:
            self._clock.sleep(0.03)
            word = self._rng.choice(WORDS) + (". " if self._rng.random() < 0.1 else " ")
            first = first if first is not None else self._clock.now() - started
            stats.first_token_s = first
            stats.completion_tokens += 1
            produced += len(word)
            yield word
        stats.total_s = self._clock.now() - started


def topology(preset: str, region: str, scale: float):
    """Ten handsets on two relays, the bot behind both."""
    handsets = [f"h{i:02d}" for i in range(HANDSETS)]
    nodes = [
        {"name": "BOT", "num": BOT, "role": "bot", "neighbours": ["R1", "R2"]},
        {"name": "R1", "num": 0x0E1A0001, "role": "relay", "neighbours": ["BOT", *handsets[:5]]},
        {"name": "R2", "num": 0x0E1A0002, "role": "relay", "neighbours": ["BOT", *handsets[5:]]},
    ]
    nodes += [
        {"name": h, "num": 0x0A000000 + i, "role": "handset", "neighbours": ["R1" if i < 5 else "R2"]}
        for i, h in enumerate(handsets)
    ]
    mesh = {"seed": 7, "time_scale": scale, "modem_preset": preset, "region": region, "hop_limit": 3}
    return parse_topology({"mesh": mesh, "nodes": nodes}), handsets


class Events(logging.Handler):
    """Counts the daemon's log events by name and reason."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event:
            reason = getattr(record, "reason", None)
            self.counts[f"{event}:{reason}" if reason and event in (Event.DROPPED, Event.FRAGMENT_NAK) else event] += 1


def run(args: argparse.Namespace) -> int:
    """Run the hour and print the tables."""
    topo, handsets = topology(args.preset, args.region, args.scale)
    mesh = VirtualMesh(topo)
    mesh.start()
    clock = mesh.clock
    cfg = load_config(
        overrides={
            "radio.host": f"127.0.0.1:{mesh.bot.port}",
            "queue.max_per_node": 2,
            "limits.per_node_per_hour": 120,
            "limits.per_node_burst": 4,
            "limits.global_per_hour": 1200,
            "limits.global_burst": 20,
            "limits.repeat_window_s": 0,
            # a real store file, as in service: its writes are part of what is measured
            "store.path": str(Path(tempfile.mkdtemp(prefix="meshbot-bench-")) / "bench.db"),
        },
        environ={},
    )
    events = Events()
    logging.getLogger("meshbot").addHandler(events)
    daemon = build_daemon(cfg, model=ScriptedModel(clock), clock=clock)
    daemon.start()
    cpu0, wall0, start = time.process_time(), time.monotonic(), clock.now()
    rng = random.Random(3)
    next_ask = {h: start + rng.uniform(0, ASK_EVERY_S) for h in handsets}
    asked = 0
    while clock.now() - start < args.hours * 3600:
        for h, due in next_ask.items():
            if clock.now() >= due:
                mesh.node(h).send_text(f"{PROMPTS[asked % len(PROMPTS)]} #{asked}", to=BOT)
                asked += 1
                next_ask[h] = due + ASK_EVERY_S
        clock.sleep(0.5)
    sim_s, wall_s, cpu_s = clock.now() - start, time.monotonic() - wall0, time.process_time() - cpu0
    report = mesh.report()
    daemon.stop(grace_s=5)
    mesh.stop()
    bot_naks = collections.Counter(p.outcome for p in mesh.bot.sent if p.outcome not in ("ACK", "PENDING"))
    out = sys.stdout
    out.write(
        f"\n{args.hours:g} simulated hour(s), {args.preset} in {args.region}, {HANDSETS} handsets asking "
        f"every {ASK_EVERY_S:.0f}s: {asked} questions; {sim_s / wall_s:.1f}x real time, "
        f"CPU {cpu_s / wall_s * 100:.0f}% of one core\n\n| figure | value |\n|---|---|\n"
    )
    rows = [
        ("texts the bot's node sent", len(mesh.bot.sent)),
        ("bot NAKs: RATE_LIMIT_EXCEEDED", bot_naks["RATE_LIMIT_EXCEEDED"]),
        ("bot NAKs: TOO_LARGE", bot_naks["TOO_LARGE"]),
        ("bot NAKs: DUTY_CYCLE_LIMIT", bot_naks["DUTY_CYCLE_LIMIT"]),
        (
            "bot NAKs: other",
            sum(v for k, v in bot_naks.items() if k not in ("RATE_LIMIT_EXCEEDED", "TOO_LARGE", "DUTY_CYCLE_LIMIT")),
        ),
    ]
    rows += [
        (f"daemon events: {k}", v)
        for k, v in sorted(events.counts.items())
        if k.split(":")[0]
        in (Event.QUEUED, Event.ANSWERED, Event.DROPPED, Event.SHORTENED, Event.FRAGMENT_NAK, Event.RETRY)
    ]
    bot_row = next(r for r in report.nodes if r.role == "bot")
    rows += [
        ("bot node duty cycle used, % (limit)", f"{bot_row.duty_percent:.1f} ({bot_row.duty_limit_percent:g})"),
        ("mesh NAKs by reason (all nodes)", dict(report.naks) or "none"),
        (
            "channel utilisation mean / max %",
            f"{report.utilisation_mean_percent:.1f} / " f"{report.utilisation_max_percent:.1f}",
        ),
    ]
    for name, value in rows:
        out.write(f"| {name} | {value} |\n")
    return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def malloc_free_mb() -> str:
    """Free memory glibc's heaps hold (all arenas): what the holes freed buffers leave keep resident."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):  # not glibc (or older than 2.33)
        return "-"
    mallinfo2.restype = _MallInfo2
    return f"{mallinfo2().fordblks / 1e6:.1f}"


def _mappings() -> Iterator[tuple[str, float, float]]:
    """Each mapping of this process: its name, size and resident MB (Linux /proc/self/smaps)."""
    name, size = "", 0.0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            low, high = (int(x, 16) for x in head[0].split("-"))
            name, size = (head[5] if len(head) > 5 else ""), (high - low) / 1e6
        elif head[0] == "Rss:":
            yield name, size, int(head[1]) * 1024 / 1e6


def memory_cells() -> str:
    """RSS, then where it is: model weights, llama.cpp's context buffers, saved states, the rest; malloc's free."""
    weights = buffers = states = total = 0.0
    for name, size, rss in _mappings():
        total += rss
        if name.endswith(".gguf"):
            weights += rss
        elif name.startswith("/dev/zero"):  # shared anonymous pages: the saved states (`prompt_cache.pages`)
            states += rss
        elif not name and size > 64:  # over malloc's 64 MB arena heaps: ggml's KV and compute buffers
            buffers = max(buffers, rss)
    rest = total - weights - buffers - states
    return f"{total:.1f} | {weights:.1f} | {buffers:.1f} | {states:.1f} | {rest:.1f} | {malloc_free_mb()}"


def serve_node(conn: Connection, scale: float, preset: str, region: str) -> None:
    """The virtual node in a process of its own, so that its logs of every packet stay out of the bot's RSS."""
    node = VirtualNode(BOT, modem_preset=preset, region=region, clock=ScaledClock(scale), ack_delay_s=0.5 / scale)
    node.start()
    conn.send(node.port)
    while (asked := conn.recv()) is not None:
        node.inject_text(*asked[:2], packet_id=asked[2])
    node.stop()


def _soak_model(name: str, clock: ScaledClock):  # type: ignore[no-untyped-def]
    """The scripted model (pacing and the daemon's own memory), or the bundled GGUF (its states on top)."""
    if name == "bundled":
        from meshbot.core.config import ModelConfig
        from meshbot.models.llama import load_model

        return load_model(ModelConfig(seed=42, threads=2))  # the default kv_cache_mb and kv_spill_mb
    return ScriptedModel(clock)


def run_askers(args: argparse.Namespace) -> int:
    """N distinct askers in turn for the given hours; print the daemon's RSS over time."""
    clock = ScaledClock(args.scale)
    ours, theirs = multiprocessing.Pipe()
    node = multiprocessing.get_context("spawn").Process(
        target=serve_node, args=(theirs, args.scale, args.preset, args.region), daemon=True
    )
    node.start()
    port = ours.recv()
    cfg = load_config(
        overrides={
            "radio.host": f"127.0.0.1:{port}",
            "join.window_s": 0,
            "limits.repeat_window_s": 0,
            "limits.global_per_hour": 100_000,
            "limits.global_burst": 1000,
            "store.path": str(Path(tempfile.mkdtemp(prefix="meshbot-soak-")) / "soak.db"),
        },
        environ={},
    )
    events = Events()
    logging.getLogger("meshbot").addHandler(events)
    model = _soak_model(args.model, clock)
    daemon = build_daemon(cfg, model=model, clock=clock)
    daemon.start()
    out = sys.stdout
    out.write(
        f"{args.askers} distinct askers, a question every {args.ask_every:g}s, {args.hours:g} h simulated, "
        f"{args.preset} {args.region}, model {getattr(model, 'name', args.model)}\n\n"
        "| simulated min | RSS MB | model weights | llama.cpp buffers | saved KV states | the rest "
        "| malloc's free | questions | answered | unreachable |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    start = clock.now()
    asked, next_ask, next_sample = 0, start, start
    while True:
        now = clock.now()
        if now >= next_sample:
            out.write(
                f"| {(now - start) / 60:.0f} | {memory_cells()} | {asked} | {events.counts[Event.ANSWERED]} "
                f"| {events.counts[Event.UNREACHABLE]} |\n"
            )
            out.flush()
            next_sample += args.sample_every
        if now - start >= args.hours * 3600:
            break
        if now >= next_ask:
            sender = 0x0A000000 + asked % args.askers
            ours.send((sender, f"{PROMPTS[asked % len(PROMPTS)]} #{asked}", 100_000 + asked))
            asked += 1
            next_ask += args.ask_every
        clock.sleep(0.5)
    daemon.stop(grace_s=5)
    model.close()
    ours.send(None)
    node.join(10)
    return 0


def main() -> int:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="LONG_FAST")
    parser.add_argument("--region", default="EU_868")
    parser.add_argument("--scale", type=float, default=20.0)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--askers", type=int, default=0, help="measure RSS with this many distinct askers")
    parser.add_argument("--ask-every", type=float, default=10.0, help="simulated seconds between questions")
    parser.add_argument("--model", choices=("scripted", "bundled"), default="scripted", help="with --askers")
    parser.add_argument("--sample-every", type=float, default=600.0, help="simulated seconds between RSS rows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("meshbot").setLevel(logging.INFO)
    logging.getLogger().handlers[0].setLevel(logging.ERROR)
    return run_askers(args) if args.askers else run(args)


if __name__ == "__main__":
    sys.exit(main())
