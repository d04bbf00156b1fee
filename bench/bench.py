"""meshbot benchmark: the daemon against the raw llama-cpp-python engine, same model, same seed.

Runs in one process sharing one loaded model. First the raw engine alone over every prompt
(weights paged in; the peak RSS of a process that only runs the model). Then, per prompt, in
alternating order:
  * raw: `create_chat_completion(stream=True)` straight on the llama-cpp-python engine;
  * daemon: the real daemon, radio over the real meshtastic TCPInterface to a virtual node,
    the prompt injected as a DM at the node.
Both start from an empty KV cache and run on the model's one engine thread.
Prints a table per prompt and a summary against the targets. Not a test: figures vary by machine.

    .venv/bin/python bench/bench.py [--threads N] [--prompts N] [--repeats N] [--preset LONG_FAST]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prompts import PROMPTS
from meshbot.app.compose import build_daemon
from meshbot.core.airtime import preset as modem_preset
from meshbot.core.airtime import time_on_air_s
from meshbot.core.config import load_config
from meshbot.core.events import Event
from meshbot.core.fragmenter import strip_numbering
from meshbot.core.limits import text_frame_len
from meshbot.core.prompting import build_generation
from meshbot.models.llama import load_model
from meshbot.sim.node.node import VirtualNode

BOT, ASKER = 0x0BB0_0001, 0x0A11_CE00
SEED = 1234


class RssSampler:
    """Samples this process's resident set every 50 ms; `peak()` is the high-water mark since reset."""

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
        while not self._stop.wait(0.05):  # coarse: a busy sampler would slow the model it measures
            self._peak = max(self._peak, self.current_kb())

    def reset(self) -> None:
        self._peak = self.current_kb()

    def peak_mb(self) -> float:
        return max(self._peak, self.current_kb()) / 1024


@dataclass
class Trial:
    """One paired run of a prompt: the raw engine and the daemon."""

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
        """Seconds until the raw engine had produced `nbytes` bytes of answer."""
        for produced, at in self.raw_bytes_at:
            if produced >= nbytes:
                return at
        return self.raw_bytes_at[-1][1] if self.raw_bytes_at else float("nan")

    @property
    def a(self) -> float:
        """The raw engine's time to the first fragment's bytes."""
        return self.raw_time_for(self.first_body_bytes)

    @property
    def ttff_ratio(self) -> float:
        """b/a for this pair."""
        return self.first_fragment_s / self.a if self.a > 0 else float("nan")

    @property
    def tps_ratio(self) -> float:
        """Daemon over raw tokens per second for this pair."""
        return self.daemon_tps / self.raw_tps if self.raw_tps else float("nan")


def run_raw(model, cfg, prompt: str, row: Trial) -> None:
    """The engine alone for one prompt, from an empty KV cache, on the model's engine thread."""
    request = build_generation(prompt, cfg, cfg.mesh.max_fragment_bytes, cfg.mesh.max_fragments)
    messages = [{"role": t.role, "content": t.content} for t in request.turns]
    prompt_tokens = model.prompt_tokens(request.turns)
    sampling = model.sampling(request.max_tokens, SEED)

    def generate(llm) -> None:
        llm.reset()
        row.raw_bytes_at.clear()
        started = time.monotonic()
        produced, first, finish = 0, None, None
        for chunk in llm.create_chat_completion(messages=messages, stream=True, **sampling):
            choice = chunk["choices"][0]
            finish = choice.get("finish_reason") or finish
            piece = choice["delta"].get("content")
            if piece:
                now = time.monotonic() - started
                first = now if first is None else first
                produced += len(piece.encode("utf-8"))
                row.raw_bytes_at.append((produced, now))
        # Tokens counted as the daemon's model counts them: from the engine, not per chunk
        # (a CJK character can take several tokens and arrive as one chunk).
        tokens = llm.n_tokens - prompt_tokens + (1 if finish == "length" else 0)
        decode = time.monotonic() - started - (first or 0.0)
        row.raw_tps = (tokens - 1) / decode if tokens > 1 and first is not None and decode > 0 else 0.0

    model.on_engine(generate)


def cold_cache(model) -> None:
    """Empty the engine's KV cache, so the next run evaluates its whole prompt."""
    model.on_engine(lambda llm: llm.reset())


class AnsweredLog(logging.Handler):
    """Collects the daemon's 'answered' events (tokens/s as the daemon measured them)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == Event.ANSWERED:
            self.answered.append(record)


class Bench:
    """The real daemon on a virtual node over TCP, with the raw engine run alongside it."""

    def __init__(self, model, cfg, preset_name: str) -> None:
        self.model = model
        self.node = VirtualNode(
            BOT, short_name="BOT", modem_preset=preset_name, region="US", peers=[(ASKER, "Asker", "ASK")]
        )
        self.node.start()
        radio_cfg = cfg.radio.model_copy(update={"host": f"127.0.0.1:{self.node.port}"})
        self.cfg = cfg.model_copy(update={"radio": radio_cfg})
        self.answered = AnsweredLog()
        logging.getLogger("meshbot").addHandler(self.answered)
        self.daemon = build_daemon(self.cfg, model=model)
        self.daemon.start()
        self.modem = modem_preset(preset_name)
        self.asked = 0

    def ask_daemon(self, row: Trial) -> None:
        """One prompt as a DM at the virtual node; waits for the whole answer to be sent."""
        # Let the previous answer's pacing gap pass: we measure the daemon, not the rate limit.
        time.sleep(self.daemon.sender.pacer.min_gap_s if self.daemon.sender else 3.0)
        cold_cache(self.model)  # the raw run starts cold too
        node, before, i = self.node, len(self.node.sent), self.asked
        injected = time.monotonic()
        node.inject_text(ASKER, row.prompt, packet_id=10_000 + i)
        _wait(lambda: len(node.sent) > before and self.daemon.idle() and len(self.answered.answered) > i)
        self.asked += 1
        sent = node.sent[before:]
        row.first_fragment_s = sent[0].at - injected
        row.first_body_bytes = len(strip_numbering(sent[0].text or "", self.cfg.mesh.ai_tag).encode("utf-8"))
        row.fragments = len(sent)
        row.fills = [len(p.payload) / self.cfg.mesh.max_fragment_bytes for p in sent[:-1]]
        row.airtime_s = sum(time_on_air_s(text_frame_len(len(p.payload), reply_id=True), self.modem) for p in sent)
        row.daemon_tps = float(getattr(self.answered.answered[i], "tokens_per_s", 0.0))

    def close(self) -> None:
        """Stop the daemon and the node."""
        self.daemon.stop(grace_s=5)
        self.node.stop()
        logging.getLogger("meshbot").removeHandler(self.answered)


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


def _median(trials: list[Trial], value) -> float:
    return statistics.median(value(t) for t in trials)


def print_table(
    prompts: list[list[Trial]], raw_peak: float, daemon_peak: float, model_name: str, threads: int, preset_name: str
) -> None:
    """The per-prompt table (medians over the repeats) and the summary against the issue's targets."""
    out = sys.stdout
    out.write(
        f"\nmachine: {machine()}\nmodel: {model_name}, {threads} threads; preset {preset_name}; "
        f"{len(prompts)} prompts x {len(prompts[0])} paired runs (medians); seed {SEED}\n\n"
    )
    out.write(
        "| # | prompt | raw first-fragment s (a) | daemon first-fragment s (b) | b/a | raw tok/s | "
        "daemon tok/s | frags | fill | air s |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    ratios, tps_ratios, fills, frags, airs = [], [], [], [], []
    for i, trials in enumerate(prompts, 1):
        first = trials[0]  # same seed, same answer: fragments, fill and air time repeat exactly
        ratio, tps_ratio = _median(trials, lambda t: t.ttff_ratio), _median(trials, lambda t: t.tps_ratio)
        ratios.append(ratio)
        tps_ratios.append(tps_ratio)
        fills += first.fills
        frags.append(first.fragments)
        airs.append(first.airtime_s)
        fill = f"{statistics.mean(first.fills):.2f}" if first.fills else "-"
        out.write(
            f"| {i} | {first.prompt[:34]} | {_median(trials, lambda t: t.a):.3f} | "
            f"{_median(trials, lambda t: t.first_fragment_s):.3f} | {ratio:.2f} | "
            f"{_median(trials, lambda t: t.raw_tps):.1f} | {_median(trials, lambda t: t.daemon_tps):.1f} | "
            f"{first.fragments} | {fill} | {first.airtime_s:.1f} |\n"
        )
    mean_fill = statistics.mean(fills) if fills else float("nan")
    summary = [
        (
            "time to first fragment, b/a (median; mean)",
            f"{statistics.median(ratios):.3f}; " f"{statistics.mean(ratios):.3f}",
            "<= 1.10",
        ),
        (
            "daemon / raw tokens per second (median; mean)",
            f"{statistics.median(tps_ratios):.3f}; " f"{statistics.mean(tps_ratios):.3f}",
            ">= 0.95",
        ),
        ("mean fill of non-final fragments", f"{mean_fill:.3f} ({len(fills)} fragments)", ">= 0.90"),
        ("fragments per answer (mean)", f"{statistics.mean(frags):.2f}", ""),
        ("air time per answer, s (mean)", f"{statistics.mean(airs):.2f}", ""),
        ("peak RSS, raw engine alone MB", f"{raw_peak:.0f}", ""),
        (
            "peak RSS, with the daemon MB (overhead)",
            f"{daemon_peak:.0f} ({daemon_peak - raw_peak:+.0f})",
            "<= raw + 60",
        ),
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
    parser.add_argument("--repeats", type=int, default=3, help="paired runs per prompt (medians reported)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().handlers[0].setLevel(logging.WARNING)  # print warnings only...
    logging.getLogger("meshbot").setLevel(logging.INFO)  # ...but let 'answered' events reach our handler
    # One asker sends every prompt, each several times: lift the per-node abuse limits and the
    # repeated-text filter, which would rightly stop it.
    cfg = load_config(
        overrides={
            "model.seed": SEED,
            "model.threads": args.threads,
            "limits.per_node_burst": 1000,
            "limits.per_node_per_hour": 100000,
            "limits.global_burst": 1000,
            "limits.global_per_hour": 100000,
            "limits.repeat_window_s": 0,
            # One asker, unrelated prompts: each is a fresh question, as the raw side sees it (memory would
            # put the earlier prompts' exchanges into every later prompt; bench_conversation.py measures that).
            "memory.enabled": False,
            # a real store file, as in service: its writes are part of what is measured
            "store.path": str(Path(tempfile.mkdtemp(prefix="meshbot-bench-")) / "bench.db"),
        },
        environ={},
    )
    sampler = RssSampler()
    model = load_model(cfg.model)
    texts = PROMPTS[: args.prompts]
    # The raw engine alone first: pages the weights in and gives the process's own peak RSS.
    for text in texts:
        run_raw(model, cfg, text, Trial(text))
    raw_peak = sampler.peak_mb()
    sampler.reset()
    prompts: list[list[Trial]] = [[] for _ in texts]
    bench = Bench(model, cfg, args.preset)
    try:
        for repeat in range(args.repeats):
            for i, text in enumerate(texts):
                trial = Trial(text)
                # Raw and daemon alternate which runs first, so a machine that speeds up or
                # slows down during the run moves both sides alike.
                order = (bench.ask_daemon, lambda t: run_raw(model, cfg, t.prompt, t))
                for run in order if (i + repeat) % 2 else reversed(order):
                    run(trial)
                prompts[i].append(trial)
                sys.stderr.write(
                    f"run {repeat + 1}/{args.repeats}, prompt {i + 1}/{len(texts)}: " f"b/a {trial.ttff_ratio:.2f}\n"
                )
    finally:
        bench.close()
    daemon_peak = sampler.peak_mb()
    print_table(prompts, raw_peak, daemon_peak, model.name, model.threads, args.preset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
