"""Two or more meshbot workers behind one bot on a real mosquitto and a real redis-server (fixtures' helpers).

Workers answer with `EchoModel` unless given a model server's URL: then with the real `openai` backend.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

from meshbot.app.compose import build_daemon
from meshbot.core.clock import VirtualClock
from meshbot.core.config import Config, load_config
from meshbot.core.domain import Generation, GenerationStats
from meshbot.core.fragmenter import strip_numbering
from meshbot.service.daemon import Daemon
from meshbot.storage.store import Store
from tests.fakes import AI_TAG, FakeModel, FakeRadio
from tests.mqtt_support import ROOT, Handset
from tests.redis_support import RedisServer

ANSWER_TOKENS = 64
FILLER = (
    "LoRa spreads each symbol over a wide chirp so a receiver can pick it out below the noise floor, and "
    "Meshtastic relays short texts from handset to handset until the hop limit runs out."
)


class EchoModel:
    """A fake model whose answer names the question, for tests about claims and leases rather than answers."""

    name = "echo-model"
    deterministic = False  # as a sampling server: a takeover ends cut off instead of writing again

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def run(self, job):  # type: ignore[no-untyped-def]
        return job()

    def close(self) -> None:
        """Nothing to release."""

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        question = request.turns[-1].content
        with self._lock:
            self.asked.append(question)
        for i, word in enumerate(f"About {question}: {FILLER}".split(" ")):
            stats.completion_tokens += 1
            yield word if i == 0 else " " + word


def openai_settings(model_url: str) -> dict[str, object]:
    """The `openai` backend on a model server (its URL ends in /v1), with answers short enough for a burst."""
    # 64 tokens: one to three fragments an answer, so 20 real answers take about a minute on 2 cores.
    # Free answers (open): a server's model size is unknown, and [answers] mode auto would answer grounded.
    return {
        "model.backend": "openai",
        "model.base_url": model_url,
        "model.max_tokens_cap": ANSWER_TOKENS,
        "answers.mode": "open",
        "answers.reference": False,
    }


def worker_config(
    broker_port: int, redis: RedisServer, worker: str, model_url: str | None = None, **overrides: object
) -> Config:
    """One worker's config: the mqtt transport, the cluster on, limits wide enough for a burst of DMs.

    With `model_url`, the `openai` backend on that server (build the worker with model=None).
    """
    settings: dict[str, object] = {
        "radio.transport": "mqtt",
        "mqtt.port": broker_port,
        "mqtt.key_wait_s": 2.0,
        "mesh.min_gap_s": 2.0,
        "mesh.ack_timeout_s": 10.0,
        "limits.per_node_burst": 10,
        "limits.global_burst": 40,
        "queue.max_per_node": 10,
        "cluster.redis_url": redis.url,
        "cluster.worker_id": worker,
        "cluster.lease_s": 3.0,
        "cluster.heartbeat_s": 1.0,
        "join.window_s": 0,  # one-line test questions are answered at once, not held for a second part
        # The bot sits on LongFast with the default key: the mesh's public channel, answered only when enabled.
        "policy.channels": [{"index": 0, "public": True}],
    }
    if model_url is not None:
        settings.update(openai_settings(model_url))
    settings.update(overrides)
    return load_config(
        overrides=settings,
        environ={"MESHBOT_MQTT_HOST": "127.0.0.1", "MESHBOT_MQTT_ROOT": ROOT, "MESHBOT_MQTT_CHANNEL": "LongFast"},
    )


class Workers:
    """In-process workers, each with its own SQLite store, sharing the broker and Redis.

    With `model_url` each worker's composition root makes the real `openai` backend; without, an `EchoModel`.
    """

    def __init__(self, broker_port: int, redis: RedisServer, tmp: Path, model_url: str | None = None) -> None:
        self.broker_port, self.redis, self.tmp, self.model_url = broker_port, redis, tmp, model_url
        self.running: dict[str, Daemon] = {}

    def start(self, worker: str, **overrides: object) -> Daemon:
        """Build and start one worker; `overrides` as worker_config takes them."""
        cfg = worker_config(self.broker_port, self.redis, worker, self.model_url, **overrides)
        model = None if self.model_url else EchoModel()  # None: build_daemon makes (and closes) the backend
        daemon = build_daemon(cfg, model=model, store=Store(self.tmp / f"{worker}.db"))
        daemon.start()
        self.running[worker] = daemon
        return daemon

    def stop_all(self) -> None:
        for daemon in self.running.values():
            daemon.stop(grace_s=2.0)
        self.running.clear()


_NUMBER = re.compile(r"^(\d+)/(\d+|\+) ")


def answers_by_question(handset: Handset) -> dict[int, list[str]]:
    """The PKI-encrypted DM fragments the handset decrypted (without the AI tag), grouped by the packet id they answer."""
    by_question: dict[int, list[str]] = {}
    for heard in list(handset.heard):
        if heard.pki and heard.data.reply_id:
            assert heard.text.startswith(AI_TAG), heard.text  # every fragment labelled as a machine's
            by_question.setdefault(heard.data.reply_id, []).append(heard.text.removeprefix(AI_TAG))
    return by_question


def complete(fragments: list[str], cap: int | None = None) -> bool:
    """True when the fragments are one whole numbered answer: 1..n each once, in order, the last `n/n`
    (or `n/+` with n == `cap`, an answer cut at max_fragments with the rest kept for "more")."""
    if len(fragments) == 1 and not _NUMBER.match(fragments[0]):
        return True  # a one-fragment answer is unnumbered
    numbers = [_NUMBER.match(f) for f in fragments]
    if not fragments or not all(numbers):
        return False
    indices = [int(m.group(1)) for m in numbers if m is not None]
    last = numbers[-1]
    assert last is not None
    ended = last.group(2) == str(len(fragments)) or (last.group(2) == "+" and len(fragments) == cap)
    return indices == list(range(1, len(fragments) + 1)) and ended


def assert_real_answer(fragments: list[str], max_bytes: int, cap: int) -> None:
    """One real answer, sent once: numbered 1..n each once, every fragment with text and within `max_bytes`."""
    assert complete(fragments, cap), fragments  # an index twice would be an answer (or a fragment) sent twice
    assert all(strip_numbering(f).strip() for f in fragments), fragments
    assert all(len((AI_TAG + f).encode()) <= max_bytes for f in fragments), fragments


def body(fragments: list[str]) -> str:
    """The answer's text without its numbering."""
    return " ".join(strip_numbering(f) for f in fragments)


class FakeRadioWorkers:
    """Daemons on fake radios behind one Redis, as compose builds them with `[cluster]` set (`base`: more settings)."""

    def __init__(self, server: RedisServer, **base: object) -> None:
        self.server, self.base = server, base
        self.running: list[Daemon] = []

    def __call__(self, worker: str, model: FakeModel, **overrides: object) -> tuple[Daemon, FakeRadio]:
        settings: dict[str, object] = {
            "radio.transport": "mqtt",  # a cluster needs it; the fake radio stands in for it here
            "cluster.redis_url": self.server.url,
            "cluster.worker_id": worker,
            "cluster.lease_s": 1.0,
            "cluster.heartbeat_s": 0.5,
            "join.window_s": 0,  # one-line test questions are answered at once, not held for a second part
            **self.base,
            **overrides,
        }
        clock = VirtualClock(start=1000.0)
        radio = FakeRadio(clock)
        cfg = load_config(overrides=settings, environ={})
        daemon = build_daemon(cfg, radio=radio, model=model, clock=clock, store=Store(":memory:"))
        daemon.start()
        self.running.append(daemon)
        return daemon, radio

    def stop(self, daemon: Daemon) -> None:
        """Stop one worker (the others go on)."""
        self.running.remove(daemon)
        daemon.stop(grace_s=1.0)

    def stop_all(self) -> None:
        """Stop every worker still running."""
        for daemon in list(self.running):
            self.stop(daemon)
