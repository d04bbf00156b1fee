"""The console's overhead: RSS and the daemon's time to first fragment, console off against on with the page open.

    python -m bench.bench_console [--rounds 3] [--questions 6] [--model bundled|echo] [--screenshot docs/console.png]

Each run is its own process: a threaded virtual mesh (Alice two hops out, Bob next to the bot, telemetry on),
the real daemon on the real meshtastic library, the bundled GGUF model (or `--model echo`, to see the
console's own cost without the model's noise). Handsets ask `--questions` questions; the run reports its
first-fragment times (from the daemon's own `first-fragment` log events) and its RSS after the last answer.
"on" runs serve the console while this process reads it as the page does (the JSON feed every 5 s) and as
Prometheus does (/metrics every 15 s). Runs alternate off/on, so a busy machine weighs on both alike.
`--screenshot` saves the last "on" run's page from headless Chromium (the docs' picture).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

QUESTIONS = (
    "What is LoRa?",
    "How far does a mesh reach?",
    "What is a relay node?",
    "Why do packets hop?",
    "What is channel utilisation?",
    "How long does a battery last?",
    "What is a mesh network?",
    "What is air time?",
)
BOT = 0x0BB0_0001
SETTLE_S = 1.0  # real seconds between an answer and the next question


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class _FirstFragments(logging.Handler):
    """Collects the daemon's first-fragment and answered events."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ttff: list[float] = []
        self.answered = 0

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event == "first-fragment":
            self.ttff.append(float(getattr(record, "ttff_s", 0.0)))
        elif event == "answered":
            self.answered += 1


def _topology() -> Any:
    from meshbot.sim.app.topology import parse_topology

    nodes = [
        ("Alice", "handset", ["Relay"]),
        ("Relay", "relay", ["BOT"]),
        ("Bob", "handset", ["BOT"]),
        ("BOT", "bot", []),
    ]
    specs = [
        {"name": n, "num": BOT if role == "bot" else 0x0A00_0000 + i, "role": role, "neighbours": nbs}
        for i, (n, role, nbs) in enumerate(nodes)
    ]
    mesh = {"seed": 1, "modem_preset": "SHORT_FAST", "region": "US", "time_scale": 20.0, "modules": True}
    return parse_topology({"mesh": {**mesh, "modules_speedup": 60.0}, "nodes": specs, "links": []})


class _Echo:
    """A model that answers at once, for the console's own cost without a model's noise."""

    name = "echo"
    deterministic = True

    def run(self, job):  # type: ignore[no-untyped-def]
        return job()

    def close(self) -> None:
        """Nothing to free."""

    def stream(self, request, stats):  # type: ignore[no-untyped-def]
        for word in f"About {request.turns[-1].content}: LoRa carries short texts far on little power.".split():
            stats.completion_tokens += 1
            yield word + " "


def child(mode: str, questions: int, model_name: str) -> dict[str, Any]:
    """One run: returns its figures (printed as JSON for the parent)."""
    from meshbot.app.compose import build_daemon
    from meshbot.core.config import ModelConfig, load_config
    from meshbot.sim.app.network import VirtualMesh
    from meshbot.storage.store import Store

    watcher = _FirstFragments()
    logging.getLogger("meshbot").addHandler(watcher)
    logging.getLogger("meshbot").setLevel(logging.INFO)
    if model_name == "bundled":
        from meshbot.models.llama import load_model

        model: Any = load_model(ModelConfig(seed=42, threads=2))
    else:
        model = _Echo()
    mesh = VirtualMesh(_topology(), manual=False)
    mesh.start(announce=True)
    settings: dict[str, Any] = {
        "radio.host": f"127.0.0.1:{mesh.bot.port}",
        "radio.connect_timeout_s": 30,
        "join.window_s": 0,
        "limits.per_node_burst": 50,
        "memory.enabled": False,  # every question a first question: the same prompt work off and on
    }
    if mode == "on":
        settings["console.port"] = 0
    with tempfile.TemporaryDirectory() as tmp:
        daemon = build_daemon(load_config(overrides=settings, environ={}), model=model, store=Store(Path(tmp) / "s.db"))
        daemon.start()
        console = next((c for c in daemon.companions if hasattr(c, "port")), None)
        print(json.dumps({"port": console.port if console else None}), flush=True)
        # One question at a time, each once the last is answered: a question queued behind the last answer's
        # pacing would time the queue, not the console (the first version of this bench did, and scattered 2x).
        by_question: list[float | None] = []
        up_by = time.monotonic() + 30
        while not daemon.radio_up.is_set() and time.monotonic() < up_by:
            time.sleep(0.05)
        time.sleep(SETTLE_S)  # the handsets' NodeInfo exchange with the bot
        for i in range(questions):
            asker = mesh.node("Alice" if i % 2 == 0 else "Bob")
            text = f"{QUESTIONS[i % len(QUESTIONS)]} ({i + 1})"  # never the same text twice: repeats are ignored
            mesh.scheduler.call_later(0.0, lambda a=asker, t=text: a.send_text(t, to=BOT))
            # A question lost on air would hold the run forever: give up on it after a while.
            seen, deadline = len(watcher.ttff), time.monotonic() + (60 if model_name == "bundled" else 10)
            while watcher.answered <= i and time.monotonic() < deadline:
                time.sleep(0.05)
            by_question.append(watcher.ttff[seen] if len(watcher.ttff) > seen else None)
            time.sleep(SETTLE_S)
        result = {
            "mode": mode,
            "ttff": watcher.ttff,
            "by_question": by_question,
            "answered": watcher.answered,
            "rss_mb": rss_mb(),
        }
        print(json.dumps(result), flush=True)
        sys.stdin.readline()  # the parent's screenshot, if any, is taken meanwhile
        daemon.stop(grace_s=2.0)
        mesh.stop()
    model.close()
    return result


class _Page(threading.Thread):
    """Reads the console as the page (every 5 s) and Prometheus (every 15 s) do."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.reads = 0
        self.feed_ms: list[float] = []

    def run(self) -> None:
        tick = 0
        while not self.stop.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(f"{self.url}/api/console.json", timeout=10) as response:
                response.read()
            self.feed_ms.append((time.perf_counter() - started) * 1000)
            if tick % 3 == 0:
                with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
                    response.read()
            self.reads += 1
            tick += 1
            self.stop.wait(5.0)


def _screenshot(url: str, path: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
        flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        flags += [f"--user-data-dir={profile}", "--window-size=1280,1500", "--virtual-time-budget=4000"]
        subprocess.run(["chromium", *flags, f"--screenshot={path.resolve()}", url], capture_output=True, timeout=60)


def run_one(mode: str, args: argparse.Namespace, shot: Path | None) -> dict[str, Any]:
    """Start one run in its own process; in "on" runs, read its console as a page would."""
    cmd = [sys.executable, "-m", "bench.bench_console", "--child", mode, "--questions", str(args.questions)]
    proc = subprocess.Popen([*cmd, "--model", args.model], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    page = _Page(f"http://127.0.0.1:{port}") if port else None
    if page is not None:
        page.start()
    result = json.loads(proc.stdout.readline())  # printed once the child's questions are answered
    if page is not None:
        page.stop.set()
        if shot is not None:
            _screenshot(f"http://127.0.0.1:{port}/", shot)
    proc.stdin.write("\n")  # now it may stop
    proc.stdin.flush()
    proc.wait(60)
    if page is not None:
        result["page_reads"] = page.reads
        result["feed_ms"] = statistics.median(page.feed_ms) if page.feed_ms else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--model", choices=("bundled", "echo"), default="bundled")
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--child", choices=("off", "on"), default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.questions, args.model)
        return
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            last_on = mode == "on" and r == args.rounds - 1
            runs.append({**run_one(mode, args, args.screenshot if last_on else None), "round": r})
            print(f"round {r + 1} {mode}: {_row(runs[-1])}", flush=True)
    _table(runs, args)


def _row(run: dict[str, Any]) -> str:
    ttff = run["ttff"]
    med = statistics.median(ttff) if ttff else float("nan")
    return f"answered {run['answered']}, ttff median {med:.3f}s, RSS {run['rss_mb']:.1f} MB"


def _table(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nconsole overhead, model {args.model}, {args.rounds} rounds x {args.questions} questions per mode")
    print(f"{'mode':<5} {'answered':>8} {'ttff p50 s':>10} {'ttff p95 s':>10} {'RSS MB':>8} {'feed ms':>8}")
    figures = {}
    for mode in ("off", "on"):
        mine = [r for r in runs if r["mode"] == mode]
        ttff = sorted(t for r in mine for t in r["ttff"])
        p50 = statistics.median(ttff) if ttff else float("nan")
        p95 = ttff[min(int(0.95 * len(ttff)), len(ttff) - 1)] if ttff else float("nan")
        rss = statistics.median(r["rss_mb"] for r in mine)
        feeds = [r["feed_ms"] for r in mine if r.get("feed_ms") is not None]
        feed = f"{statistics.median(feeds):.1f}" if feeds else "-"
        print(f"{mode:<5} {sum(r['answered'] for r in mine):>8} {p50:>10.3f} {p95:>10.3f} {rss:>8.1f} {feed:>8}")
        figures[mode] = (p50, rss)
    pairs = _paired(runs)
    paired = statistics.median(pairs) if pairs else float("nan")
    print(
        f"on/off: ttff p50 {figures['on'][0] / figures['off'][0]:.3f}x, "
        f"paired median {paired:.3f}x over {len(pairs)} questions (target <= 1.02), "
        f"RSS {figures['on'][1] - figures['off'][1]:+.1f} MB (target <= +25)"
    )


def _paired(runs: list[dict[str, Any]]) -> list[float]:
    """On/off ratios of the same question in the same round: the same prompt and seed, the page open or not."""
    ratios = []
    for r in {run["round"] for run in runs}:
        off, on = ({run["mode"]: run for run in runs if run["round"] == r}[m]["by_question"] for m in ("off", "on"))
        ratios += [b / a for a, b in zip(off, on, strict=True) if a and b]
    return ratios


if __name__ == "__main__":
    main()
