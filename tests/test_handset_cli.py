"""A person at a virtual handset from the terminal: the official CLI and `meshbot handset` against the virtual mesh.

The handset's commands the demo prints must work as printed and end without a traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from meshtastic.protobuf import mesh_pb2

from meshbot.app.cli import main
from meshbot.core.ids import node_id
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.topology import load_topology
from meshbot.sim.rules.framing import encode_frame

MESHTASTIC = Path(sys.executable).parent / "meshtastic"  # the official CLI, installed beside this Python
CLI_S = 60.0  # real seconds an official CLI run may take on a busy machine


@pytest.fixture
def demo_mesh() -> Iterator[VirtualMesh]:
    """The demo's virtual mesh (Alice, Relay, BOT, Bob) in real time, with no bot daemon."""
    mesh = VirtualMesh(load_topology("demo"))
    mesh.start()
    yield mesh
    mesh.stop()


def test_the_official_cli_reads_a_virtual_node_and_exits_cleanly(demo_mesh: VirtualMesh) -> None:
    port = demo_mesh.node("Alice").port
    for _ in range(3):
        done = subprocess.run(
            [str(MESHTASTIC), "--host", f"127.0.0.1:{port}", "--info"], capture_output=True, text=True, timeout=CLI_S
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "Alice Handheld" in done.stdout


def test_a_client_that_says_disconnect_is_disconnected_as_the_firmware_does(demo_mesh: VirtualMesh) -> None:
    """ToRadio.disconnect ends a TCP session on the firmware (PhoneAPI::close -> ServerAPI::close: client.stop())."""
    goodbye = mesh_pb2.ToRadio(disconnect=True).SerializeToString()
    with socket.create_connection(("127.0.0.1", demo_mesh.node("Alice").port), timeout=10) as sock:
        sock.sendall(encode_frame(goodbye))
        assert sock.recv(4096) == b""  # the node closed the connection (EOF), not left it hanging


def _handset(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["handset", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out


def _later(seconds: float, action: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_meshbot_handset_sends_and_prints_the_reply_then_exits(
    demo_mesh: VirtualMesh, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = demo_mesh.node("Alice"), demo_mesh.node("Bob")
    # Bob answers in two fragments, as the bot would: "1/+" says more follows, "2/2" ends it.
    timers = [
        _later(4.0, lambda: bob.send_text("1/+ hello", to=alice.node_num)),
        _later(6.0, lambda: bob.send_text("2/2 back", to=alice.node_num)),
    ]
    try:
        code, out = _handset(
            capsys, "--host", f"127.0.0.1:{alice.port}", "--to", node_id(bob.node_num), "--wait", "30", "hi bob"
        )
    finally:
        for timer in timers:
            timer.join()
    assert code == 0, out
    assert f"you → {node_id(bob.node_num)}: hi bob" in out
    assert "(relayed by a neighbour (implicit ACK))" in out or "(delivered: ACK from the destination)" in out
    assert "→ you (1 hop): 1/+ hello" in out and out.rstrip().endswith("→ you (1 hop): 2/2 back")


def test_meshbot_handset_gives_up_after_the_wait_with_one_line(
    demo_mesh: VirtualMesh, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = demo_mesh.node("Alice"), demo_mesh.node("Bob")
    code, out = _handset(
        capsys, "--host", f"127.0.0.1:{alice.port}", "--to", node_id(bob.node_num), "--wait", "3", "hi"
    )
    assert code == 1 and out.rstrip().endswith("(3 s without a word: giving up)")


def test_meshbot_handset_lists_the_mesh_and_closes_without_a_traceback(
    demo_mesh: VirtualMesh, capsys: pytest.CaptureFixture[str]
) -> None:
    """A one-shot command: it closes right after connecting, the case where the official CLI's library races."""
    alice = demo_mesh.node("Alice")
    deadline = time.monotonic() + CLI_S
    while len(alice.known_nodes()) < 4 and time.monotonic() < deadline:  # the nodes' first NodeInfo
        time.sleep(0.2)
    for _ in range(5):
        code, out = _handset(capsys, "--host", f"127.0.0.1:{alice.port}", "--nodes")  # asserts no traceback
        assert code == 0
        assert "Alice Handheld   !0a11ce00  self" in out and "Bob Handheld" in out and "meshbot" in out


def test_meshbot_handset_needs_a_destination(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _handset(capsys, "--host", "127.0.0.1:1", "hello")
    assert code == 2 and out == "meshbot handset: say where it goes: --to NODE (a DM) or --channel N\n"


def test_meshbot_handset_with_a_bad_node_id_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _handset(capsys, "--host", "127.0.0.1:1", "--to", "bob", "hello")
    assert code == 2 and out.count("\n") == 1 and out.startswith("meshbot handset: --to: bad node id 'bob'")
