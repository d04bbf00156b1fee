"""meshbot benchmark, openai backend: the daemon against the same OpenAI-compatible server called directly.

Starts llama-cpp-python's own server (`python -m llama_cpp.server`) on the bundled GGUF, then per prompt, in
alternating order:
  * server: the same chat completion request the daemon would send, streamed straight from the server;
  * daemon: the real daemon on the openai backend, radio over the real meshtastic TCPInterface to a virtual
    node, the prompt injected as a DM at the node.
Before each run a one-token request with another prompt evicts the server's prompt cache, so neither side
inherits the other's prompt. Then the peak RSS of a daemon process on each backend (openai against this
server, llama_cpp in process), each answering the same few prompts in a child process.
Not a test: figures vary by machine.

    .venv/bin/python bench/bench_openai.py [--prompts 8] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from httpx_sse import connect_sse

from bench.bench import AnsweredLog, _wait, machine
from bench.prompts import PROMPTS
from meshbot.app.compose import build_daemon
from meshbot.core.config import Config, load_config
from meshbot.core.domain import Asker
from meshbot.core.fragmenter import strip_numbering
from meshbot.core.prompting import build_generation
from meshbot.models.llama import bundled_model_path
from meshbot.models.openai_api import OpenAIModel
from meshbot.sim.node.node import VirtualNode

BOT, ASKER = 0x0BB0_0001, 0x0A11_CE00
ASKER_SHORT = "A"
SEED = 1234
RSS_PROMPTS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(threads: int) -> tuple[subprocess.Popen[bytes], str]:
    """llama_cpp.server on the bundled model; waits until it lists the model."""
    port = free_port()
    # `meshbot serve-model` is llama_cpp.server itself, loaded as the llama backend loads (AMX Xeons need it).
    cmd = [sys.executable, "-m", "meshbot", "serve-model", "--model", str(bundled_model_path()), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads)]
    # Requests queue rather than cut each other off (the default ends a stream when another request arrives).
    cmd += ["--interrupt_requests", "false"]
    # Its log goes to a file: llama.cpp writes enough at load to fill a pipe and block the server.
    log_path = Path(tempfile.mkdtemp(prefix="meshbot-bench-")) / "llama-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"llama_cpp.server did not start within 120 s; its log: {log_path}")


@dataclass
class Trial:
    """One paired run of a prompt: the server called directly, and the daemon."""

    prompt: str
    raw_bytes_at: list[tuple[int, float]] = field(default_factory=list)
    raw_tps: float = 0.0
    raw_total_s: float = 0.0
    first_fragment_s: float = 0.0
    first_body_bytes: int = 0
    daemon_tps: float = 0.0
    fragments: int = 0
    worker_ttff_s: float = 0.0  # inside the daemon run: from the request to the server to fragment 1 ready

    @property
    def a(self) -> float:
        """The server's own time to the first fragment's bytes."""
        for produced, at in self.raw_bytes_at:
            if produced >= self.first_body_bytes:
                return at
        return self.raw_bytes_at[-1][1] if self.raw_bytes_at else float("nan")

    @property
    def ratio(self) -> float:
        return self.first_fragment_s / self.a if self.a > 0 else float("nan")

    @property
    def same_run_ratio(self) -> float:
        """b over the server's time to the same bytes in the same run (c): blind to load swinging between runs."""
        return self.first_fragment_s / self.worker_ttff_s if self.worker_ttff_s > 0 else float("nan")


class Direct:
    """The server called directly with the request the daemon's backend builds for the same prompt."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.model = OpenAIModel(cfg.model)  # only to build the identical request body
        self.client = httpx.Client(base_url=f"{cfg.model.base_url}/", timeout=120)
        self.flushes = 0

    def flush(self) -> None:
        """A one-token request with another prompt: the next run evaluates its whole prompt."""
        self.flushes += 1
        body = {"messages": [{"role": "user", "content": f"flush {self.flushes}"}], "max_tokens": 1}
        self.client.post("chat/completions", json=body).raise_for_status()

    def run(self, row: Trial) -> None:
        cfg = self.cfg
        # Told who asks, as the daemon's prompt is (the virtual node's peer "A", heard directly).
        asker = Asker(short_name=ASKER_SHORT, hops=0)
        request = build_generation(row.prompt, cfg, cfg.mesh.max_fragment_bytes, cfg.mesh.max_fragments, asker=asker)
        body = self.model.request_body(self.model.model_id(), dataclasses.replace(request, seed=SEED))
        self.flush()
        row.raw_bytes_at.clear()
        produced, pieces, first = 0, 0, None
        started = time.monotonic()
        with connect_sse(self.client, "POST", "chat/completions", json=body) as source:
            for sse in source.iter_sse():
                if sse.data.strip() == "[DONE]":
                    break
                for choice in json.loads(sse.data).get("choices", ()):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        now = time.monotonic() - started
                        first = now if first is None else first
                        produced += len(piece.encode("utf-8"))
                        pieces += 1
                        row.raw_bytes_at.append((produced, now))
        row.raw_total_s = time.monotonic() - started
        decode = row.raw_total_s - (first or 0.0)
        row.raw_tps = (pieces - 1) / decode if pieces > 1 and decode > 0 else 0.0


class FirstFragmentLog(logging.Handler):
    """The worker's own time from its request to fragment 1 ready ('first-fragment' events)."""

    def __init__(self) -> None:
        super().__init__()
        self.ttff: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "first-fragment":
            self.ttff.append(float(getattr(record, "ttff_s", 0.0)))


class DaemonSide:
    """The real daemon on the openai backend, on a virtual node over TCP."""

    def __init__(self, cfg: Config, direct: Direct) -> None:
        self.node = VirtualNode(
            BOT, short_name="BOT", modem_preset="LONG_FAST", region="US", peers=[(ASKER, ASKER_SHORT, ASKER_SHORT)]
        )
        self.node.start()
        self.cfg = cfg.model_copy(
            update={"radio": cfg.radio.model_copy(update={"host": f"127.0.0.1:{self.node.port}"})}
        )
        self.answered = AnsweredLog()
        self.first = FirstFragmentLog()
        logging.getLogger("meshbot").addHandler(self.answered)
        logging.getLogger("meshbot").addHandler(self.first)
        self.daemon = build_daemon(self.cfg)
        self.daemon.start()
        self.direct = direct
        self.asked = 0

    def run(self, row: Trial) -> None:
        time.sleep(self.cfg.mesh.min_gap_s)  # the previous answer's pacing gap: not what we measure
        self.direct.flush()
        node, before, i = self.node, len(self.node.sent), self.asked
        injected = time.monotonic()
        node.inject_text(ASKER, row.prompt, packet_id=20_000 + i)
        _wait(lambda: len(node.sent) > before and self.daemon.idle() and len(self.answered.answered) > i)
        self.asked += 1
        sent = node.sent[before:]
        row.first_fragment_s = sent[0].at - injected
        row.first_body_bytes = len(strip_numbering(sent[0].text or "").encode("utf-8"))
        row.fragments = len(sent)
        row.daemon_tps = float(getattr(self.answered.answered[i], "tokens_per_s", 0.0))
        row.worker_ttff_s = self.first.ttff[i]

    def close(self) -> None:
        self.daemon.stop(grace_s=5)
        self.node.stop()


def bench_config(url: str, threads: int) -> Config:
    """One asker sends every prompt several times: lift the abuse limits that would rightly stop it."""
    return load_config(
        overrides={
            "model.backend": "openai",
            "model.base_url": url,
            "model.seed": SEED,
            "model.threads": threads,
            "limits.per_node_burst": 1000,
            "limits.per_node_per_hour": 100000,
            "limits.global_burst": 1000,
            "limits.global_per_hour": 100000,
            "limits.repeat_window_s": 0,
            # One asker, unrelated prompts: each is a fresh question, as the direct side sends it (memory would
            # put the earlier exchanges into every later prompt, which the server would then read again).
            "memory.enabled": False,
            "store.path": str(Path(tempfile.mkdtemp(prefix="meshbot-bench-")) / "bench.db"),
        },
        environ={},
    )


# -- peak RSS of a daemon process on each backend ---------------------------------------------------------------
def rss_child(backend: str, url: str, threads: int) -> None:
    """In a fresh process: a daemon on `backend` answers RSS_PROMPTS questions; print its peak RSS (VmHWM) in MB."""
    cfg = bench_config(url, threads)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"backend": backend})})
    side = DaemonSide(cfg, Direct(cfg))
    try:
        for text in PROMPTS[:RSS_PROMPTS]:
            side.run(Trial(text))
    finally:
        side.close()
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    llama = "llama_cpp" in sys.modules
    print(json.dumps({"backend": backend, "peak_mb": hwm / 1024, "llama_cpp_imported": llama}))


def measure_rss(backend: str, url: str, threads: int) -> dict:
    run = subprocess.run(
        [sys.executable, __file__, "--rss-child", backend, "--url", url, "--threads", str(threads)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if run.returncode != 0:
        raise SystemExit(f"RSS child ({backend}) failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def print_tables(prompts: list[list[Trial]], rss: list[dict], threads: int) -> None:
    out = sys.stdout
    med = statistics.median
    out.write(
        f"\nmachine: {machine()}\nserver: llama_cpp.server on {bundled_model_path().name}, {threads} threads; "
        f"{len(prompts)} prompts x {len(prompts[0])} paired runs (medians); seed {SEED}\n\n"
        "| # | prompt | server time to fragment-1 bytes s (a) | daemon first fragment s (b) | b/a | "
        "same run: server time to those bytes s (c) | b/c | server tok/s | daemon tok/s | frags |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    ratios, tps, same = [], [], []
    for i, trials in enumerate(prompts, 1):
        ratio = med(t.ratio for t in trials)
        tps_ratio = med(t.daemon_tps / t.raw_tps for t in trials if t.raw_tps)
        ratios.append(ratio)
        tps.append(tps_ratio)
        same.append(med(t.same_run_ratio for t in trials))
        out.write(
            f"| {i} | {trials[0].prompt[:34]} | {med(t.a for t in trials):.3f} | "
            f"{med(t.first_fragment_s for t in trials):.3f} | {ratio:.2f} | "
            f"{med(t.worker_ttff_s for t in trials):.3f} | {same[-1]:.3f} | {med(t.raw_tps for t in trials):.1f} | "
            f"{med(t.daemon_tps for t in trials):.1f} | {trials[0].fragments} |\n"
        )
    by = {r["backend"]: r for r in rss}
    rows = [
        ("time to first fragment, b/a (median; mean)", f"{med(ratios):.3f}; {statistics.mean(ratios):.3f}", "<= 1.10"),
        (
            "same run, b/c: daemon overhead on the server's own time (median; max)",
            f"{med(same):.3f}; {max(same):.3f}",
            "",
        ),
        ("daemon / server tokens per second (median)", f"{med(tps):.3f}", ""),
        ("peak RSS, daemon on openai MB", f"{by['openai']['peak_mb']:.0f}", ""),
        ("peak RSS, daemon on llama_cpp (in process) MB", f"{by['llama_cpp']['peak_mb']:.0f}", ""),
        ("llama_cpp imported by the openai daemon", str(by["openai"]["llama_cpp_imported"]), "False"),
    ]
    out.write("\n| figure | measured | target |\n|---|---|---|\n")
    for name, value, target in rows:
        out.write(f"| {name} | {value} | {target} |\n")


def main() -> int:
    """Start the server, run the pairs, then the two RSS children, and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="server (and in-process model) threads")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    logging.getLogger("meshbot").setLevel(logging.INFO)  # 'answered' events reach our handler
    if args.rss_child:
        rss_child(args.rss_child, args.url, args.threads)
        return 0
    proc, url = start_server(args.threads)
    try:
        cfg = bench_config(url, args.threads)
        direct = Direct(cfg)
        side = DaemonSide(cfg, direct)
        texts = PROMPTS[: args.prompts]
        prompts: list[list[Trial]] = [[] for _ in texts]
        try:
            for repeat in range(args.repeats):
                for i, text in enumerate(texts):
                    trial = Trial(text)
                    order = (side.run, direct.run)  # alternate who goes first, so drift hits both alike
                    for run in order if (i + repeat) % 2 else reversed(order):
                        run(trial)
                    prompts[i].append(trial)
                    sys.stderr.write(f"run {repeat + 1}, prompt {i + 1}: b/a {trial.ratio:.2f}\n")
        finally:
            side.close()
        rss = [measure_rss(backend, url, args.threads) for backend in ("openai", "llama_cpp")]
    finally:
        proc.kill()
    print_tables(prompts, rss, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
