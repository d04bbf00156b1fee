"""SIGTERM and Ctrl-C stop a real `meshbot run` within seconds, in every state; a second Ctrl-C exits at once.

Each test runs the daemon as a child process (tests/daemon_proc.py) and reads its JSON log. The
radio is the real meshtastic library: over TCP to nothing, to a listener that never answers, or to
a VirtualNode; the model is the bundled GGUF.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshbot.app.runner import STOP_GRACE_S
from meshbot.core.config import RadioConfig
from meshbot.core.domain import RadioUnavailable
from meshbot.radios.meshtastic_lib import MeshtasticRadio
from meshbot.sim.node.node import VirtualNode
from meshbot.storage.store import Store
from tests.daemon_proc import REPO, DaemonProcess
from tests.fakes import BOT_NUM
from tests.faults_support import PEER_NUMS, PEERS

STOP_WITHIN_S = 5.0  # connecting or reconnecting: nothing in progress, the stop is quick
# A reply in progress gets STOP_GRACE_S; then it is abandoned and the radio closed. systemd and docker
# wait 10 s before SIGKILL: the whole stop must fit well inside that.
STOP_WITH_REPLY_WITHIN_S = STOP_GRACE_S + 2.5
LONG_QUESTION = "Explain in detail how LoRa radios reach so far, and how a mesh network routes messages."
# Slow pacing, so the reply is still in progress when the signal lands, and many long fragments
# (up to 1000 tokens), so the model is usually still writing when the grace runs out.
GENERATING = {
    "model": {"seed": 7, "threads": 1, "max_tokens_cap": 1000},
    "mesh": {"min_gap_s": 10.0, "max_fragments": 20},
    "radio": {"connect_timeout_s": 20},
}


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The log objects with this event name."""
    return [e for e in events if e.get("event") == name]


def unused_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A listening socket that accepts TCP connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0), backlog=8)
    server.settimeout(30)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def silent_listener(silent_server: socket.socket) -> int:
    """The silent server's port (connections wait in the kernel's backlog)."""
    return int(silent_server.getsockname()[1])


@pytest.fixture
def node() -> Iterator[VirtualNode]:
    node = VirtualNode(BOT_NUM, short_name="BOT", modem_preset="SHORT_TURBO", region="US", peers=PEERS)
    node.start()
    yield node
    node.stop()


def assert_stopped_cleanly(proc: DaemonProcess, code: int | None, elapsed: float, within_s: float) -> None:
    """Exit code 0 within `within_s`, the "stopped" line, and no traceback anywhere in the output."""
    print(f"exit code {code} {elapsed:.2f}s after the signal")
    assert code == 0, f"exit code {code} after {elapsed:.1f}s:\n{proc.tail()}"
    assert elapsed < within_s, f"took {elapsed:.1f}s to stop:\n{proc.tail()}"
    assert named(proc.events(), "stopped"), proc.tail()
    assert "Traceback" not in proc.log_path.read_text(encoding="utf-8")


def closed_by_peer(link: socket.socket, timeout: float) -> bool:
    """Read (the library's wake-up bytes and config request) until the other end closes; False on timeout."""
    link.settimeout(timeout)
    try:
        while link.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


# -- the radio alone ------------------------------------------------------------------------------
def test_close_aborts_a_connect_blocked_in_the_library_and_releases_the_link(silent_server: socket.socket) -> None:
    port = silent_server.getsockname()[1]
    radio = MeshtasticRadio(RadioConfig(host=f"127.0.0.1:{port}", connect_timeout_s=120))
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def connect() -> None:
        try:
            radio.start(lambda msg: None, lambda event: None)
            outcome.put(None)
        except BaseException as exc:
            outcome.put(exc)

    threading.Thread(target=connect, daemon=True).start()
    link, _ = silent_server.accept()  # the library is connected and waits for a config that never comes
    with link:
        radio.close()
        error = outcome.get(timeout=10)
        assert isinstance(error, RadioUnavailable) and "closed while connecting" in str(error)
        assert closed_by_peer(link, timeout=10), "the half-built link was left open"


# -- connecting -----------------------------------------------------------------------------------
def test_sigterm_stops_a_daemon_retrying_an_absent_radio(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path, f"127.0.0.1:{unused_port()}", {}) as proc:
        proc.spawn()
        proc.wait_for(lambda events: len(named(events, "radio-retry")) >= 2, timeout=60)  # in a backoff wait
        code, elapsed = proc.signal_and_wait(signal.SIGTERM)
    assert_stopped_cleanly(proc, code, elapsed, STOP_WITHIN_S)
    assert not named(proc.events(), "started")


def test_sigterm_stops_a_daemon_whose_radio_accepts_but_never_answers(tmp_path: Path, silent_listener: int) -> None:
    # The library's connect blocks here for connect_timeout_s (300 s by default) waiting for the config.
    with DaemonProcess(tmp_path, f"127.0.0.1:{silent_listener}", {}) as proc:
        proc.spawn()
        proc.wait_for(lambda events: bool(named(events, "radio-connecting")), timeout=60)
        code, elapsed = proc.signal_and_wait(signal.SIGTERM)
    assert_stopped_cleanly(proc, code, elapsed, STOP_WITHIN_S)
    assert not named(proc.events(), "radio-retry")  # it was stopped inside the first attempt


# -- reconnecting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("after", ["refused", "silent"])
def test_sigterm_stops_a_daemon_reconnecting_after_the_link_dropped(
    tmp_path: Path, node: VirtualNode, after: str
) -> None:
    """The node goes away; then its port refuses (backoff between attempts) or accepts and stays silent
    (as a rebooting node's TCP stack may: the library's connect blocks in every attempt)."""
    with DaemonProcess(tmp_path, f"127.0.0.1:{node.port}", {"radio": {"connect_timeout_s": 20}}) as proc:
        proc.start()
        port = node.port
        node.stop()  # the link drops
        proc.wait_for(lambda events: len(named(events, "radio-retry")) >= 1, timeout=60)
        with contextlib.ExitStack() as stack:
            if after == "silent":  # the next attempt connects, and waits in the library for a config
                attempts = len(named(proc.events(), "radio-connecting"))
                stack.enter_context(socket.create_server(("127.0.0.1", port), backlog=8))
                proc.wait_for(lambda events: len(named(events, "radio-connecting")) > attempts, timeout=60)
                time.sleep(0.5)
            else:
                proc.wait_for(lambda events: len(named(events, "radio-retry")) >= 2, timeout=60)
            code, elapsed = proc.signal_and_wait(signal.SIGTERM)
    assert_stopped_cleanly(proc, code, elapsed, STOP_WITHIN_S)
    assert named(proc.events(), "radio-down")
    steps = [e["event"] for e in proc.events() if e.get("event") in ("radio-connecting", "radio-retry", "signal")]
    # What the signal interrupted: an attempt blocked in the library, or a backoff wait after a refusal.
    assert steps[steps.index("signal") - 1] == ("radio-connecting" if after == "silent" else "radio-retry")


# -- paused -------------------------------------------------------------------------------------
def test_sigterm_stops_a_paused_daemon_and_the_held_question_stays_stored(tmp_path: Path, node: VirtualNode) -> None:
    admin = PEER_NUMS[1]
    sections = {"radio": {"connect_timeout_s": 20}, "limits": {"admins": [f"!{admin:08x}"]}}
    with DaemonProcess(tmp_path, f"127.0.0.1:{node.port}", sections) as proc:
        proc.start()
        node.inject_text(admin, "!pause", to=BOT_NUM, packet_id=801)
        proc.wait_for(lambda events: bool(named(events, "admin")), timeout=30)
        node.inject_text(PEER_NUMS[0], "a question while paused", to=BOT_NUM, packet_id=802)
        proc.wait_for(lambda events: bool(named(events, "queued")), timeout=30)
        code, elapsed = proc.signal_and_wait(signal.SIGTERM)
    assert_stopped_cleanly(proc, code, elapsed, STOP_WITHIN_S)
    with Store.open_read_only(proc.store_path) as store:
        held = store.unfinished()
    assert [(q.question, q.state.value) for q in held] == [("a question while paused", "queued")]


# -- mid-answer -----------------------------------------------------------------------------------
def ask_and_wait_for_first_fragment(proc: DaemonProcess, node: VirtualNode, packet_id: int) -> None:
    """Ask a question with a long answer; return once its first fragment went on air."""
    node.inject_text(PEER_NUMS[0], LONG_QUESTION, to=BOT_NUM, packet_id=packet_id)
    proc.wait_for(lambda events: bool(named(events, "fragment-sent")), timeout=120)


@pytest.mark.model
@pytest.mark.slow
def test_sigterm_mid_answer_stops_within_the_grace_and_the_reply_resumes_at_the_next_start(
    tmp_path: Path, node: VirtualNode
) -> None:
    with DaemonProcess(tmp_path, f"127.0.0.1:{node.port}", GENERATING) as proc:
        proc.start()
        ask_and_wait_for_first_fragment(proc, node, packet_id=701)
        code, elapsed = proc.signal_and_wait(signal.SIGTERM)
        assert_stopped_cleanly(proc, code, elapsed, STOP_WITH_REPLY_WITHIN_S)
        events = proc.events()
        # The model either finished within the grace ("answered") and the unsent fragments were left,
        # or it was still writing and the reply was abandoned; either way a line says it stays stored.
        left = named(events, "abandoned")
        assert left and all(e.get("reason") == "shutdown" for e in left), proc.tail()
        assert all(e.get("query_id") == 1 or e.get("query_ids") == [1] for e in left), proc.tail()
        print(
            f"stopped {elapsed:.2f}s after SIGTERM mid-answer; "
            f"{'finished writing' if named(events, 'answered') else 'abandoned while writing'}, "
            f"{len(named(events, 'fragment-sent'))} fragment(s) on air, {len(left)} abandoned line(s)"
        )
        proc.start()  # the next start picks the reply up where it was left
        proc.wait_for(lambda events: any(e.get("query_id") == 1 for e in named(events, "resumed")), timeout=60)
        code, _ = proc.signal_and_wait(signal.SIGTERM)
        assert code == 0, proc.tail()


@pytest.mark.model
def test_a_second_ctrl_c_exits_at_once_without_a_traceback(tmp_path: Path, node: VirtualNode) -> None:
    with DaemonProcess(tmp_path, f"127.0.0.1:{node.port}", GENERATING) as proc:
        proc.start()
        ask_and_wait_for_first_fragment(proc, node, packet_id=702)
        first, _ = proc.signal_and_wait(signal.SIGINT, timeout=0.5)
        assert first is None, "the first Ctrl-C must start a graceful stop, which waits for the reply"
        code, elapsed = proc.signal_and_wait(signal.SIGINT, timeout=10)
    output = proc.log_path.read_text(encoding="utf-8")
    assert code == 130, f"exit code {code}:\n{proc.tail()}"
    assert elapsed < 2.0, f"the second Ctrl-C took {elapsed:.1f}s"
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert len(named(proc.events(), "interrupted")) == 1


# -- meshbot sim ----------------------------------------------------------------------------------
def test_ctrl_c_stops_meshbot_sim_with_its_bot_and_prints_the_report(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBOT_")}
    env["MESHBOT_STORE_PATH"] = str(tmp_path / "sim.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshbot", "sim", "--bot"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = iter(proc.stdout.readline, "")
        assert any(line.startswith("bot up") for line in lines), proc.stderr.read() if proc.stderr else ""
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert elapsed < STOP_WITHIN_S, f"took {elapsed:.1f}s"
    assert "mesh report:" in out and "Traceback" not in err
