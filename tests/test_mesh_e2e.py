"""End to end across a virtual mesh: the official `meshtastic` CLI on a handset, the daemon with the
real bundled model on the bot's radio, two relays between them, real time.

Meshtastic counts hops as relays (hop_start - hop_limit): a handset whose packets need two relays to
reach the bot sees the bot's answers "2 hops" away. That takes a chain of four nodes,
handset - relay - relay - bot; with a single relay (the demo mesh) the apps would show 1 hop.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from meshbot.core.limits import APP_TEXT_LIMIT_BYTES
from meshbot.service.daemon import Daemon
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.report import render_report
from meshbot.sim.app.topology import parse_topology
from tests.conftest import wait_until

pytestmark = [pytest.mark.model, pytest.mark.slow]

BOT = 0x0BB0_0001
CLI_TIMEOUT_S = 60
TEXT = "TEXT_MESSAGE_APP"

TOPOLOGY = {
    "mesh": {"seed": 42, "time_scale": 1.0, "modem_preset": "SHORT_FAST", "region": "US", "hop_limit": 3},
    "nodes": [
        {
            "name": "Alice",
            "id": "!0a11ce00",
            "long_name": "Alice Handheld",
            "short_name": "ALI",
            "role": "handset",
            "neighbours": ["Hill"],
        },
        {
            "name": "Hill",
            "id": "!0e1a0001",
            "long_name": "Hill Relay",
            "short_name": "HILL",
            "role": "relay",
            "neighbours": ["Tower"],
        },
        {
            "name": "Tower",
            "id": "!0e1a0002",
            "long_name": "Tower Relay",
            "short_name": "TOWR",
            "role": "relay",
            "neighbours": ["BOT"],
        },
        {"name": "BOT", "id": "!0bb00001", "long_name": "meshbot", "short_name": "BOT", "role": "bot"},
    ],
}


@pytest.fixture
def mesh() -> Iterator[VirtualMesh]:
    vmesh = VirtualMesh(parse_topology(TOPOLOGY))
    vmesh.start()
    assert vmesh.settle(30), "the nodes never finished announcing themselves"
    yield vmesh
    vmesh.stop()


@pytest.fixture
def daemon(mesh: VirtualMesh, real_daemon) -> Daemon:
    return real_daemon(mesh.bot.port)


def meshtastic_cli(port: int, *args: str) -> subprocess.CompletedProcess:
    """The official CLI, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "meshtastic", "--host", f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def test_the_official_cli_asks_the_bot_two_hops_away_and_the_handset_gets_every_fragment(mesh, daemon):
    alice = mesh.node("Alice")
    sent = meshtastic_cli(alice.port, "--sendtext", "what is lora?", "--dest", "!0bb00001", "--ack")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "Received an implicit ACK" in sent.stdout or "Received an ACK" in sent.stdout, sent.stdout
    [question] = [p for p in alice.sent if p.text == "what is lora?"]
    assert question.to == BOT and question.outcome == "ACK"

    def answered() -> bool:
        replies = [p for p in mesh.bot.sent if p.portnum == TEXT]
        heard = [h for h in alice.received if h.sender == BOT and h.portnum == TEXT]
        return daemon.idle() and bool(replies) and len(heard) >= len(replies)

    try:
        wait_until(answered, timeout=120)
    except AssertionError:
        pytest.fail(
            f"no complete answer: bot sent {[(p.text, p.outcome) for p in mesh.bot.sent]}, alice heard "
            f"{[h.text for h in alice.received if h.portnum == TEXT]}, daemon idle {daemon.idle()}\n"
            f"{render_report(mesh.report())}"
        )
    replies = [p for p in mesh.bot.sent if p.portnum == TEXT]
    heard = [h for h in alice.received if h.sender == BOT and h.portnum == TEXT]
    assert [h.packet_id for h in heard] == [p.packet_id for p in replies]  # every fragment, in order
    assert [h.text for h in heard] == [p.text for p in replies]
    for h in heard:
        assert h.text is not None and len(h.payload) <= APP_TEXT_LIMIT_BYTES
        assert h.payload.decode("utf-8") == h.text
        assert h.to == alice.node_num and h.reply_id == question.packet_id
        assert h.hop_start - h.hop_limit == 2

    listed = meshtastic_cli(alice.port, "--nodes")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for name in ("meshbot", "Hill Relay", "Tower Relay", "!0bb00001"):
        assert name in listed.stdout, listed.stdout
