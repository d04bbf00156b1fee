"""Questions per minute with 1, 2 and 4 workers behind one bot, all sharing ONE model server, and what limited it.

Real parts: mosquitto and redis-server on 127.0.0.1 (started here), the workers' real MQTT transport with
the cluster on, handsets that uplink every DM through two gateways, and one `python -m llama_cpp.server` on the
bundled SmolLM2 GGUF that every worker reaches through the `openai` backend (`--interrupt_requests false`: the
server answers one request at a time and queues the rest). The workers run in this process; `--model echo` swaps
the server for an instant fake, to see what the broker and the pacing allow alone.

    .venv/bin/python bench/cluster_throughput.py [--questions 24] [--workers 1,2,4] [--model server|echo]

Not a test: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench import machine
from bench.bench_openai import start_server
from bench.prompts import PROMPTS
from meshbot.app.compose import build_daemon
from meshbot.models import make_model
from meshbot.storage.store import Store
from tests.cluster_support import EchoModel, answers_by_question, complete, worker_config
from tests.mqtt_support import Broker, Handset
from tests.redis_support import RedisServer

T = TypeVar("T")
GATEWAYS = (0x6A7E0001, 0x6A7E0002)
MAX_FRAGMENTS = 3


class BusyMeter:
    """Wall time during which at least one worker was waiting on the model (the server answers one at a time)."""

    def __init__(self) -> None:
        self.busy_s = 0.0
        self._active = 0
        self._since = 0.0
        self._lock = threading.Lock()

    def enter(self) -> None:
        """A request to the model starts."""
        with self._lock:
            if self._active == 0:
                self._since = time.monotonic()
            self._active += 1

    def leave(self) -> None:
        """A request to the model ended."""
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self.busy_s += time.monotonic() - self._since


class TimedModel:
    """One worker's model, reporting to the shared meter while it answers."""

    def __init__(self, model: Any, meter: BusyMeter) -> None:
        self._model, self._meter = model, meter
        self.name, self.deterministic = model.name, model.deterministic

    def run(self, job: Callable[[], T]) -> T:
        self._meter.enter()
        try:
            return self._model.run(job)  # type: ignore[no-any-return]
        finally:
            self._meter.leave()

    def stream(self, request: Any, stats: Any) -> Any:
        return self._model.stream(request, stats)

    def close(self) -> None:
        self._model.close()


def one_run(n_workers: int, n_questions: int, url: str | None, tmp: Path) -> dict[str, float]:
    broker, redis = Broker(tmp), RedisServer(tmp)
    broker.start()
    redis.start()
    meter = BusyMeter()
    daemons = []
    handsets = [Handset(broker.port, 0x0C000001 + i, gateways=GATEWAYS) for i in range(6)]
    try:
        for i in range(n_workers):
            settings: dict[str, object] = {"mesh.max_fragments": MAX_FRAGMENTS}
            if url is not None:  # the backend an operator would set, at its default token cap
                settings.update({"model.backend": "openai", "model.base_url": url})
            cfg = worker_config(broker.port, redis, f"w{i}", **settings)
            model = TimedModel(make_model(cfg.model) if url is not None else EchoModel(), meter)
            daemon = build_daemon(cfg, model=model, store=Store(tmp / f"w{i}.db"))
            daemon.start()
            daemons.append(daemon)
        for h in handsets:
            while h.bot_key is None:
                time.sleep(0.05)
            h.announce()
        time.sleep(1.0)
        started = time.monotonic()
        asked = [(h := handsets[i % len(handsets)], h.dm(PROMPTS[i % 10])) for i in range(n_questions)]
        while not all(complete(answers_by_question(h).get(pid, []), MAX_FRAGMENTS) for h, pid in asked):
            time.sleep(0.1)
            if time.monotonic() - started > 900:
                raise SystemExit("not all answered in 15 min")
        wall = time.monotonic() - started
        fragments = sum(len(answers_by_question(h).get(pid, [])) for h, pid in asked)
        per_worker = [d.store.status()["last_hour"]["answered"] for d in daemons]
        gap = daemons[0].pacer.min_gap_s
        return {
            "workers": n_workers,
            "wall_s": wall,
            "per_min": n_questions / wall * 60,
            "model_busy": meter.busy_s / wall,
            "fragments": fragments,
            # What pacing alone forces: each worker's fragments at least min_gap_s apart.
            "pacing_s": max(per_worker) / max(sum(per_worker), 1) * fragments * gap,
            "split": "/".join(str(n) for n in per_worker),
        }
    finally:
        for d in daemons:
            d.stop(grace_s=2.0)
            d.model.close()
        for h in handsets:
            h.close()
        broker.stop()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument(
        "--model", choices=("server", "echo"), default="server", help="echo: an instant fake, to see pacing alone"
    )
    parser.add_argument("--threads", type=int, default=2, help="the model server's threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server, url = start_server(args.threads) if args.model == "server" else (None, None)
    rows = []
    try:
        for n in (int(x) for x in args.workers.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(one_run(n, args.questions, url, Path(tmp)))
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    what = "one llama_cpp.server on SmolLM2-135M" if url else "an instant fake model"
    print(f"\n{args.questions} DMs (each uplinked by 2 gateways), {what}, max {MAX_FRAGMENTS} fragments")
    print(f"machine: {machine()}\n")
    print("| workers | wall s | questions/min | model busy | fragments | pacing floor s | answered per worker |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['wall_s']:.1f} | {r['per_min']:.1f} | {r['model_busy']:.0%} | {r['fragments']} "
            f"| {r['pacing_s']:.0f} | {r['split']} |"
        )


if __name__ == "__main__":
    main()
