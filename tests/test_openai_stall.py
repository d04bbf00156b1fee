"""The openai backend against servers that misbehave: one that stalls mid-stream, one that is not there.

The daemon is the real one (real meshtastic TCPInterface to a virtual node); the stalling server is a tiny
stdlib HTTP server in a thread (tests/openai_servers.py). No llama.cpp anywhere: these run in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.config import load_config
from meshbot.core.fragmenter import looks_like_fragment
from meshbot.service.daemon import Daemon
from meshbot.service.worker import CUT_MARKER, MODEL_APOLOGY
from meshbot.sim.node.node import VirtualNode
from meshbot.storage.store import Store
from tests.conftest import wait_until
from tests.fakes import AI_TAG
from tests.openai_servers import StallingServer, free_port

pytestmark = [pytest.mark.slow]

BOT = 0x0BB0_0001
ALICE = 0x0A11_CE00
REPO_ROOT = __file__.rsplit("/tests/", 1)[0]
# About 1.6 fragments of text, in word-sized pieces, then silence.
WORDS = "LoRa trades speed for reach: a slow chirp spread over a wide band can be heard far below the noise. " * 3


@pytest.fixture
def node() -> Iterator[VirtualNode]:
    vnode = VirtualNode(BOT, short_name="BOT", modem_preset="SHORT_FAST", region="US", peers=[(ALICE, "Alice", "ALI")])
    vnode.start()
    yield vnode
    vnode.stop()


@pytest.fixture
def start_daemon(node: VirtualNode) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(url: str, **model: object) -> Daemon:
        overrides = {"radio.host": f"127.0.0.1:{node.port}", "mesh.min_gap_s": 2.0, "radio.connect_timeout_s": 20}
        overrides |= {
            "model.backend": "openai",
            "model.base_url": url,
            "answers.mode": "open",
            "answers.reference": False,
        }
        overrides |= {f"model.{key}": value for key, value in model.items()}
        bot = build_daemon(load_config(overrides=overrides, environ={}), store=Store(":memory:"))
        bot.start()
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.stop(grace_s=2.0)


def test_a_stream_that_stalls_after_fragments_went_on_air_ends_with_the_cut_off_marker(
    node: VirtualNode, start_daemon
) -> None:
    pieces = [w + " " for w in WORDS.split()]
    with StallingServer(pieces) as server:
        daemon = start_daemon(server.url, chunk_timeout_s=1.5)
        node.inject_text(ALICE, "How does LoRa reach so far?", packet_id=301)
        wait_until(lambda: len(node.sent) >= 2 and daemon.idle(), timeout=30)
    assert all(p.text.startswith(AI_TAG) for p in node.sent)  # labelled as a machine's
    texts = [p.text.removeprefix(AI_TAG) for p in node.sent]
    assert server.requests == 1, "an answer already on air was generated again"
    assert [t.split(" ", 1)[0] for t in texts] == ["1/+", "2/2"]
    assert texts[0][4:] in WORDS  # fragment 1 is the server's text, once
    assert texts[1].endswith(CUT_MARKER)
    assert all(
        looks_like_fragment(t) and len(p.payload) <= 200 and p.reply_id == 301
        for t, p in zip(texts, node.sent, strict=False)
    )


def test_a_server_that_stalls_before_any_text_is_retried_then_the_asker_gets_one_apology(
    node: VirtualNode, start_daemon
) -> None:
    with StallingServer([]) as server:
        daemon = start_daemon(server.url, chunk_timeout_s=0.5, retry_for_s=2.0, retry_backoff_s=0.3)
        node.inject_text(ALICE, "Anyone there?", packet_id=401)
        wait_until(lambda: node.sent and daemon.idle(), timeout=30)
    assert server.requests >= 2
    assert [(p.text, p.reply_id) for p in node.sent] == [(AI_TAG + MODEL_APOLOGY, 401)]


def test_a_daemon_on_the_openai_backend_never_imports_llama_cpp() -> None:
    # In a fresh interpreter: build and run the real daemon on this backend (its server away), ask, stop.
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from meshbot.app.compose import build_daemon
        from meshbot.core.config import load_config
        from meshbot.sim.node.node import VirtualNode
        from meshbot.storage.store import Store
        node = VirtualNode({BOT}, short_name="BOT", modem_preset="SHORT_FAST", region="US",
                           peers=[({ALICE}, "Alice", "ALI")])
        node.start()
        env = {{"MESHBOT_MODEL_BACKEND": "openai", "MESHBOT_MODEL_BASE_URL": "http://127.0.0.1:{free_port()}/v1"}}
        cfg = load_config(overrides={{"radio.host": f"127.0.0.1:{{node.port}}", "model.retry_for_s": 0}}, environ=env)
        daemon = build_daemon(cfg, store=Store(":memory:"))
        daemon.start()
        node.inject_text({ALICE}, "hello?", packet_id=7)
        deadline = time.monotonic() + 30
        while not (node.sent and daemon.idle()) and time.monotonic() < deadline:
            time.sleep(0.05)
        daemon.stop(grace_s=2.0)
        node.stop()
        print(json.dumps({{"llama": sorted(m for m in sys.modules if m.startswith("llama")),
                          "sent": [p.text for p in node.sent]}}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": REPO_ROOT, "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"llama": [], "sent": [AI_TAG + MODEL_APOLOGY]}


def test_meshbot_ask_on_a_server_that_is_not_there_says_what_to_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    run = subprocess.run(
        [sys.executable, "-m", "meshbot", "ask", "--backend", "openai", "--base-url", url, "hello?"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": REPO_ROOT, "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2
    assert run.stdout.startswith(f"error: the model server at {url}: cannot connect")
    assert "Traceback" not in run.stderr
