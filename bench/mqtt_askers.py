"""Many distinct askers through an MQTT broker: does the daemon's memory level off?

A real mosquitto on 127.0.0.1; the daemon (`[radio] transport = "mqtt"`, a scripted model: the question is
per-node state, not the model) in a child process; this process plays the askers behind one gateway: each new
asker announces its NodeInfo (a fresh X25519 key) and DMs the bot PKI-encrypted; a tenth of them ask again.
Askers arrive evenly over the run. Prints the child's RSS over time and the growth over the second half.
Not a test; run it once.

    .venv/bin/python bench/mqtt_askers.py [--askers 2000] [--minutes 20] [--tail-minutes 20]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshbot.core.domain import Generation, GenerationStats
from meshbot.models.base import BaseModel
from tests.mqtt_support import Broker, Handset, new_id

GATEWAY = 0x6A7E0001
WORDS = "LoRa radios trade speed for range so a short message can cross many kilometres of open country".split()


class ScriptedModel(BaseModel):
    """Answers of 100-400 bytes, a word every 5 ms."""

    name = "scripted"

    def __init__(self) -> None:
        self._rng = random.Random(1)

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        target, produced = self._rng.randint(100, 400), 0
        while produced < target:
            time.sleep(0.005)
            word = self._rng.choice(WORDS) + " "
            if stats.first_token_s is None:
                stats.first_token_s = 0.005
            stats.completion_tokens += 1
            produced += len(word)
            yield word


def child(port: int, db: str) -> int:
    """The daemon: runs until SIGTERM."""
    from meshbot.app.compose import build_daemon
    from meshbot.core.config import load_config

    cfg = load_config(
        overrides={
            "radio.transport": "mqtt",
            "mqtt.host": "127.0.0.1",
            "mqtt.port": port,
            "mesh.min_gap_s": 2.0,
            "mqtt.ack_wait_s": 5.0,
            "store.path": db,
            "log.level": os.environ.get("BENCH_LOG", "WARNING"),
            "limits.global_per_hour": 3600,
            "limits.global_burst": 20,
        },
        environ={},
    )
    import logging

    logging.basicConfig(level=os.environ.get("BENCH_LOG", "WARNING"))
    daemon = build_daemon(cfg, model=ScriptedModel())
    daemon.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    daemon.stop(grace_s=2.0)
    return 0


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares growth of (seconds, MB) samples, in MB per hour."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mm = sum(m for _, m in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return 3600 * sum((t - mt) * (m - mm) for t, m in samples) / var if var else 0.0


def run(args: argparse.Namespace) -> int:
    """Start the broker and the daemon, play the askers, print the table."""
    work = Path(tempfile.mkdtemp(prefix="meshbot-mqtt-bench-"))
    broker = Broker(work)
    broker.start()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(broker.port), str(work / "bot.db")], env=env)
    listener = Handset(broker.port, 0x0A000000, (GATEWAY,), auto_ack=True)  # hears the bot's NodeInfo
    try:
        deadline = time.monotonic() + 60
        while listener.bot_key is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the daemon never announced itself")
            time.sleep(0.1)
        return play(args, proc.pid, listener)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        listener.close()
        broker.stop()


def play(args: argparse.Namespace, pid: int, listener: Handset) -> int:
    """Askers arrive evenly over the run; RSS is sampled every `--every` seconds."""
    from meshbot.radios.mqtt import codec, crypto
    from meshbot.radios.mqtt.codec import BROADCAST, Header
    from tests.mqtt_support import LONGFAST

    bot_key, bot_num = listener.bot_key, listener.bot_num
    assert bot_key is not None and bot_num is not None
    arrive_s = args.minutes * 60
    total_s = arrive_s + args.tail_minutes * 60  # the tail: only askers already seen ask again
    gap = arrive_s / args.askers
    keys: list[tuple[int, bytes]] = []
    start = time.monotonic()
    samples: list[tuple[float, float]] = [(0.0, rss_mb(pid))]
    print(f"{'minute':>7} {'askers':>7} {'RSS MB':>8}")
    print(f"{0.0:7.1f} {0:7d} {samples[0][1]:8.1f}")
    rng = random.Random(2)
    asked = 0
    next_sample = args.every
    next_repeat = 0.0
    while (now := time.monotonic() - start) < total_s:
        if asked < args.askers and now >= asked * gap:
            num = 0x20000000 + asked
            private = crypto.generate_private_key()
            keys.append((num, private))
            user = codec.mesh_pb2.User(id=f"!{num:08x}", long_name=f"Asker {asked}", short_name="ASK")
            user.public_key = crypto.public_key_of(private)
            info = codec.nodeinfo_data(user, want_response=False, ok_to_mqtt=True)
            listener.publish(codec.seal_channel(Header(num, BROADCAST, new_id(), 3), info, LONGFAST), "LongFast")
            for _ in range(2 if rng.random() < 0.1 else 1):
                text = codec.text_data(f"question {asked}: what is lora? {rng.random():.3f}", None, ok_to_mqtt=True)
                head = Header(num, bot_num, new_id(), 3, want_ack=True)
                listener.publish(codec.seal_pki(head, text, private, bot_key), "PKI")
            asked += 1
            continue
        if asked >= args.askers and now >= next_repeat:
            num, private = rng.choice(keys)  # an asker seen before asks again: no new node
            text = codec.text_data(f"again {rng.random():.6f}", None, ok_to_mqtt=True)
            head = Header(num, bot_num, new_id(), 3, want_ack=True)
            listener.publish(codec.seal_pki(head, text, private, bot_key), "PKI")
            next_repeat = now + gap
            continue
        if now >= next_sample:
            samples.append((now, rss_mb(pid)))
            print(f"{now / 60:7.1f} {asked:7d} {samples[-1][1]:8.1f}", flush=True)
            next_sample += args.every
        time.sleep(0.01)
    half = [s for s in samples if s[0] >= total_s / 2]
    tail = [s for s in samples if s[0] >= arrive_s]
    print(
        f"\nRSS {samples[0][1]:.1f} MB at start, {samples[-1][1]:.1f} MB at the end, peak {max(m for _, m in samples):.1f}"
    )
    print(f"growth over the second half: {slope_mb_per_hour(half):+.1f} MB/hour (target <= 5)")
    print(f"growth over the whole run:   {slope_mb_per_hour(samples):+.1f} MB/hour")
    if args.tail_minutes:
        print(f"growth in the tail (no new askers): {slope_mb_per_hour(tail):+.1f} MB/hour")
    print(f"per new asker: {(samples[-1][1] - samples[0][1]) * 1024 / max(asked, 1):.1f} KB")
    print(f"packets the bot published: {listener.packets_from[bot_num]}")
    return 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child(int(sys.argv[2]), sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--askers", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--tail-minutes", type=float, default=0.0, help="then only known askers, this long")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between RSS samples")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
