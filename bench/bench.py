"""meshbot benchmark: the daemon against the raw llama-cpp-python engine, same model, same seed.

Runs in one process, in two phases sharing one loaded model:
  1. raw: `create_chat_completion(stream=True)` straight on the engine, for each prompt;
  2. daemon: the real daemon, radio over the real meshtastic TCPInterface to a virtual node,
     each prompt injected as a DM at the node.
Prints a table per prompt and a summary against the targets. Not a test: figures vary by machine.

    .venv/bin/python bench/bench.py [--threads N] [--prompts N] [--preset LONG_FAST]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prompts import PROMPTS  # noqa: E402
from meshbot.airtime import preset as modem_preset, time_on_air_s  # noqa: E402
from meshbot.clock import SystemClock  # noqa: E402
from meshbot.config import load_config  # noqa: E402
from meshbot.daemon import Daemon  # noqa: E402
from meshbot.fragmenter import strip_numbering  # noqa: E402
from meshbot.limits import text_frame_len  # noqa: E402
from meshbot.model import load_model  # noqa: E402
from meshbot.prompting import build_generation  # noqa: E402
from meshbot.radio import MeshtasticRadio  # noqa: E402
from meshbot.sim.node import VirtualNode  # noqa: E402

BOT, ASKER = 0x0BB0_0001, 0x0A11_CE00
SEED = 1234


class RssSampler:
    """Samples this process's resident set every 10 ms; `peak()` is the high-water mark since reset."""

    def __init__(self) -> None:
        self._peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def current_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, self.current_kb())

    def reset(self) -> None:
        self._peak = self.current_kb()

    def peak_mb(self) -> float:
        return max(self._peak, self.current_kb()) / 1024


@dataclass
class Row:
    prompt: str
    raw_bytes_at: list[tuple[int, float]] = field(default_factory=list)  # (cumulative bytes, seconds)
    raw_tps: float = 0.0
    first_fragment_s: float = 0.0
    first_body_bytes: int = 0
    daemon_tps: float = 0.0
    fills: list[float] = field(default_factory=list)
    fragments: int = 0
    airtime_s: float = 0.0

    def raw_time_for(self, nbytes: int) -> float:
        for produced, at in self.raw_bytes_at:
            if produced >= nbytes:
                return at
        return self.raw_bytes_at[-1][1] if self.raw_bytes_at else float("nan")


def run_raw(model, cfg, prompt: str, row: Row) -> None:
    """Phase 1 for one prompt: the engine alone."""
    request = build_generation(prompt, cfg.model, cfg.mesh.max_fragment_bytes, cfg.mesh.max_fragments)
    messages = [{"role": t.role, "content": t.content} for t in request.turns]
    started = time.monotonic()
    produced, tokens, first = 0, 0, None
    for chunk in model.engine.create_chat_completion(messages=messages, stream=True,
                                                     **model.sampling(request.max_tokens, SEED)):
        piece = chunk["choices"][0]["delta"].get("content")
        if not piece:
            continue
        now = time.monotonic() - started
        first = now if first is None else first
        tokens += 1
        produced += len(piece.encode("utf-8"))
        row.raw_bytes_at.append((produced, now))
    decode = (row.raw_bytes_at[-1][1] - first) if first is not None else 0
    row.raw_tps = (tokens - 1) / decode if tokens > 1 and decode > 0 else 0.0


class AnsweredLog(logging.Handler):
    """Collects the daemon's 'answered' events (tokens/s as the daemon measured them)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "answered":
            self.answered.append(record)


def run_daemon_phase(model, cfg, rows: list[Row], preset_name: str) -> None:
    """Phase 2: every prompt through the real daemon and a virtual node over TCP."""
    node = VirtualNode(BOT, short_name="BOT", modem_preset=preset_name, region="US",
                       peers=[(ASKER, "Asker", "ASK")])
    node.start()
    cfg = cfg.model_copy(update={"radio": cfg.radio.model_copy(update={"host": f"127.0.0.1:{node.port}"})})
    answered = AnsweredLog()
    logging.getLogger("meshbot").addHandler(answered)
    daemon = Daemon(cfg, MeshtasticRadio(cfg.radio), model, SystemClock())
    daemon.start()
    modem = modem_preset(preset_name)
    try:
        for i, row in enumerate(rows):
            # Let the previous answer's pacing gap pass: we measure the daemon, not the rate limit.
            time.sleep(daemon.sender.pacer.min_gap_s if daemon.sender else 3.0)
            before = len(node.sent)
            injected = time.monotonic()
            node.inject_text(ASKER, row.prompt, packet_id=10_000 + i)
            _wait(lambda: len(node.sent) > before and daemon.idle() and len(answered.answered) > i)
            sent = node.sent[before:]
            row.first_fragment_s = sent[0].at - injected
            row.first_body_bytes = len(strip_numbering(sent[0].text or "").encode("utf-8"))
            row.fragments = len(sent)
            budget = cfg.mesh.max_fragment_bytes
            row.fills = [len(p.payload) / budget for p in sent[:-1]]
            row.airtime_s = sum(time_on_air_s(text_frame_len(len(p.payload), reply_id=True), modem)
                                for p in sent)
            row.daemon_tps = float(getattr(answered.answered[i], "tokens_per_s", 0.0))
            sys.stderr.write(f"daemon {i + 1}/{len(rows)}: first fragment {row.first_fragment_s:.3f}s\n")
    finally:
        daemon.stop(grace_s=5)
        node.stop()
        logging.getLogger("meshbot").removeHandler(answered)


def _wait(predicate, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not answer in time")
        # Coarse on purpose: a tight poll would steal CPU from the model on a 2-core box.
        # Timings come from the node's own stamps, not from this loop.
        time.sleep(0.05)


def machine() -> str:
    """One line describing where the figures came from."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB, Python {platform.python_version()}"


def print_table(rows: list[Row], raw_peak: float, daemon_peak: float, model_name: str, threads: int,
                preset_name: str) -> None:
    """The per-prompt table and the summary against the issue's targets."""
    out = sys.stdout
    out.write(f"\nmachine: {machine()}\nmodel: {model_name}, {threads} threads; preset {preset_name}; "
              f"{len(rows)} prompts; seed {SEED}\n\n")
    out.write("| # | prompt | raw first-fragment s (a) | daemon first-fragment s (b) | b/a | raw tok/s | "
              "daemon tok/s | frags | fill | air s |\n|---|---|---|---|---|---|---|---|---|---|\n")
    ratios, tps_ratios, fills, frags, airs = [], [], [], [], []
    for i, row in enumerate(rows, 1):
        a = row.raw_time_for(row.first_body_bytes)
        ratio = row.first_fragment_s / a if a > 0 else float("nan")
        ratios.append(ratio)
        if row.raw_tps:
            tps_ratios.append(row.daemon_tps / row.raw_tps)
        fills += row.fills
        frags.append(row.fragments)
        airs.append(row.airtime_s)
        fill = f"{statistics.mean(row.fills):.2f}" if row.fills else "-"
        out.write(f"| {i} | {row.prompt[:34]} | {a:.3f} | {row.first_fragment_s:.3f} | {ratio:.2f} | "
                  f"{row.raw_tps:.1f} | {row.daemon_tps:.1f} | {row.fragments} | {fill} | {row.airtime_s:.1f} |\n")
    mean_fill = statistics.mean(fills) if fills else float("nan")
    summary = [
        ("time to first fragment, b/a (median; mean)", f"{statistics.median(ratios):.3f}; "
         f"{statistics.mean(ratios):.3f}", "<= 1.10"),
        ("daemon / raw tokens per second (mean)", f"{statistics.mean(tps_ratios):.3f}", ">= 0.95"),
        ("mean fill of non-final fragments", f"{mean_fill:.3f} ({len(fills)} fragments)", ">= 0.90"),
        ("fragments per answer (mean)", f"{statistics.mean(frags):.2f}", ""),
        ("air time per answer, s (mean)", f"{statistics.mean(airs):.2f}", ""),
        ("peak RSS, raw phase MB", f"{raw_peak:.0f}", ""),
        ("peak RSS, daemon phase MB (overhead)", f"{daemon_peak:.0f} ({daemon_peak - raw_peak:+.0f})", "<= raw + 60"),
    ]
    out.write("\n| figure | measured | target |\n|---|---|---|\n")
    for name, value, target in summary:
        out.write(f"| {name} | {value} | {target} |\n")


def main() -> int:
    """Run both phases and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: one per core)")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many prompts to run")
    parser.add_argument("--preset", default="LONG_FAST", help="the virtual node's modem preset")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().handlers[0].setLevel(logging.WARNING)  # print warnings only...
    logging.getLogger("meshbot").setLevel(logging.INFO)  # ...but let 'answered' events reach our handler
    # One asker sends every prompt: lift the per-node abuse limits, which would rightly stop it.
    cfg = load_config(overrides={"model.seed": SEED, "model.threads": args.threads,
                                 "limits.per_node_burst": 1000, "limits.per_node_per_hour": 100000,
                                 "limits.global_burst": 1000, "limits.global_per_hour": 100000}, environ={})
    sampler = RssSampler()
    model = load_model(cfg.model)
    rows = [Row(p) for p in PROMPTS[: args.prompts]]
    run_raw(model, cfg, rows[0].prompt, Row(rows[0].prompt))  # warm-up: page the weights in
    sampler.reset()
    for row in rows:
        run_raw(model, cfg, row.prompt, row)
    raw_peak = sampler.peak_mb()
    sampler.reset()
    run_daemon_phase(model, cfg, rows, args.preset)
    daemon_peak = sampler.peak_mb()
    print_table(rows, raw_peak, daemon_peak, model.name, model.threads, args.preset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
