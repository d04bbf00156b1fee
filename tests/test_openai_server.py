"""The openai backend end to end: the real daemon, the real meshtastic TCPInterface to a virtual node, and
llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`) on the bundled GGUF."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.config import load_config
from meshbot.core.domain import Generation, GenerationStats
from meshbot.core.fragmenter import looks_like_fragment
from meshbot.core.ids import node_id
from meshbot.models import make_model
from meshbot.service.daemon import Daemon
from meshbot.service.worker import MODEL_APOLOGY
from meshbot.sim.node.node import VirtualNode
from meshbot.storage.store import QueryState, Store
from tests.conftest import wait_until
from tests.fakes import AI_TAG
from tests.openai_servers import LlamaServer

pytestmark = [pytest.mark.model, pytest.mark.slow]

BOT = 0x0BB0_0001
ALICE = 0x0A11_CE00
BOB = 0x0B0B_0000  # an admin
CAROL = 0x0CA4_0100


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """A server of this module's own, not the session's `model_server`: these tests kill it and start it again."""
    server = LlamaServer(tmp_path_factory.mktemp("llama-server"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def node() -> Iterator[VirtualNode]:
    peers = [(ALICE, "Alice", "ALI"), (BOB, "Bob", "BOB"), (CAROL, "Carol", "CAR")]
    vnode = VirtualNode(BOT, short_name="BOT", modem_preset="SHORT_FAST", region="US", peers=peers)
    vnode.start()
    yield vnode
    vnode.stop()


class FinishTimes:
    """Wraps a model and notes (monotonic time) when each of its streams ended: the server finished."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.deterministic = inner.name, inner.deterministic
        self.finished_at: list[float] = []

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        yield from self.inner.stream(request, stats)
        self.finished_at.append(time.monotonic())

    def run(self, job):
        return self.inner.run(job)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def openai_daemon(node: VirtualNode) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(url: str, wrap: Callable | None = None, **model: object) -> Daemon:
        # The acceptance run's two variables select the backend; the rest as a test needs it.
        env = {"MESHBOT_MODEL_BACKEND": "openai", "MESHBOT_MODEL_BASE_URL": url}
        overrides = {"radio.host": f"127.0.0.1:{node.port}", "mesh.min_gap_s": 2.0, "radio.connect_timeout_s": 20}
        overrides |= {"model.seed": 42, "limits.admins": [node_id(BOB)]}
        # Free answers of several fragments, as these tests stream them (a server's model size is unknown: grounded).
        overrides |= {"answers.mode": "open", "answers.reference": False}
        overrides |= {f"model.{key}": value for key, value in model.items()}
        cfg = load_config(overrides=overrides, environ=env)
        built = make_model(cfg.model)
        bot = build_daemon(cfg, model=wrap(built) if wrap else built, store=Store(":memory:"))
        bot.start()
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.stop(grace_s=5.0)


def to(node: VirtualNode, dest: int, reply_id: int | None = None) -> list:
    return [p for p in node.sent if p.to == dest and (reply_id is None or p.reply_id == reply_id)]


def test_a_dm_is_answered_in_fragments_and_fragment_one_leaves_while_the_server_writes(
    llama_server: LlamaServer, node: VirtualNode, openai_daemon
) -> None:
    timed: list[FinishTimes] = []
    daemon = openai_daemon(llama_server.url, wrap=lambda m: timed.append(FinishTimes(m)) or timed[0])
    node.inject_text(ALICE, "Explain how LoRa radios work and why they reach so far.", packet_id=101)
    wait_until(lambda: timed[0].finished_at and node.sent and daemon.idle(), timeout=120)
    sent = node.sent
    assert len(sent) >= 2, [p.text for p in sent]
    for packet in sent:
        assert packet.to == ALICE and packet.reply_id == 101 and packet.outcome == "ACK"
        assert (
            packet.text is not None
            and len(packet.payload) <= 200
            and looks_like_fragment(packet.text.removeprefix(AI_TAG))
        )
    assert [p.text.removeprefix(AI_TAG).split(" ", 1)[0] for p in sent][:-1] == [f"{i}/+" for i in range(1, len(sent))]
    assert sent[0].at < timed[0].finished_at[0], "fragment 1 waited for the whole answer"
    assert daemon.store.last_event("model-ok", "model-error")[0] == "model-ok"


def test_a_killed_server_costs_one_apology_per_question_and_answers_resume_when_it_is_back(
    llama_server: LlamaServer, node: VirtualNode, openai_daemon, tmp_path: Path
) -> None:
    daemon = openai_daemon(
        llama_server.url, retry_for_s=4.0, retry_backoff_s=0.5, retry_max_backoff_s=1.0, connect_timeout_s=2.0
    )
    llama_server.kill()
    node.inject_text(ALICE, "What is a mesh network?", packet_id=201)
    node.inject_text(CAROL, "Why is the sky blue?", packet_id=202)
    node.inject_text(BOB, "!stats", packet_id=203)
    wait_until(lambda: len(node.sent) >= 3 and daemon.idle(), timeout=60)
    time.sleep(1.0)  # anything extra would show now
    apologies = [(p.to, p.reply_id) for p in node.sent if p.text == AI_TAG + MODEL_APOLOGY]
    assert sorted(apologies) == [(ALICE, 201), (CAROL, 202)]
    assert len(node.sent) == 3
    # The intake answered the admin while the worker was still waiting for the server.
    assert node.sent[0].to == BOB and node.sent[0].text.removeprefix(AI_TAG).startswith("queue ")
    assert {daemon.store.get(q).state for q in (1, 2)} == {QueryState.FAILED}
    assert daemon.store.last_event("model-ok", "model-error")[0] == "model-error"

    llama_server.start()
    node.inject_text(ALICE, "What is LoRa?", packet_id=204)
    wait_until(lambda: to(node, ALICE, 204) and daemon.idle(), timeout=120)
    answer = to(node, ALICE, 204)
    assert all(p.text != AI_TAG + MODEL_APOLOGY and len(p.payload) <= 200 for p in answer)
    assert len(answer) == 1 or all(looks_like_fragment(p.text.removeprefix(AI_TAG)) for p in answer)
    assert daemon.store.last_event("model-ok", "model-error")[0] == "model-ok"


def meshbot_ask(*args: str) -> subprocess.CompletedProcess[str]:
    root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": root, "PATH": "/usr/bin:/bin", "HOME": root, "MESHBOT_ANSWERS_MODE": "open"}
    return subprocess.run(
        [sys.executable, "-m", "meshbot", "ask", *args], capture_output=True, text=True, timeout=120, env=env, cwd=root
    )


def test_meshbot_ask_tries_a_server_before_the_bot_is_pointed_at_it(llama_server: LlamaServer) -> None:
    run = meshbot_ask("--backend", "openai", "--base-url", llama_server.url, "What is LoRa?")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("[1] ") and lines[-1].startswith("-- ") and "tokens/s" in lines[-1]
    assert all(int(line.split()[1]) <= 200 for line in lines if line.startswith("["))
