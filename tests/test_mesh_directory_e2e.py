"""The node directory on the virtual mesh, with the official `meshtastic` client and the real daemon.

The sim plays the firmware: nodes share positions and device telemetry, answer traceroute and telemetry
requests and the admin requests the CLI makes. The bot's radio connects node-less (nonce 69420) and then
asks for the node list alone (69421); the directory fills from that and from every packet heard.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from meshbot.service.daemon import Daemon
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.topology import parse_topology
from tests.conftest import wait_until

pytestmark = [pytest.mark.slow]

BOT, HILL, ALICE = 0x0BB0_0001, 0x0E1A_0001, 0x0A11_CE00
CLI_TIMEOUT_S = 90
TEXT = "TEXT_MESSAGE_APP"

TOPOLOGY = {
    "mesh": {"seed": 42, "modem_preset": "SHORT_TURBO", "region": "US", "hop_limit": 3, "channels": ["Ops"]},
    "nodes": [
        {
            "name": "Alice",
            "id": "!0a11ce00",
            "long_name": "Alice Handheld",
            "short_name": "ALI",
            "role": "handset",
            "neighbours": ["Hill"],
            "position": [47.3769, 8.5417],
        },
        {
            "name": "Hill",
            "id": "!0e1a0001",
            "long_name": "Hill Relay",
            "short_name": "HILL",
            "role": "relay",
            "neighbours": ["BOT"],
            "position": [47.4000, 8.6000],
        },
        {
            "name": "BOT",
            "id": "!0bb00001",
            "long_name": "meshbot",
            "short_name": "BOT",
            "role": "bot",
            "position": [47.4988, 8.7237],
        },
    ],
}


@pytest.fixture
def mesh() -> Iterator[VirtualMesh]:
    vmesh = VirtualMesh(parse_topology(TOPOLOGY))
    vmesh.start()
    assert vmesh.settle(30), "the nodes never finished announcing themselves"
    yield vmesh
    vmesh.stop()


def meshtastic_cli(port: int, *args: str) -> subprocess.CompletedProcess:
    """The official CLI, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "meshtastic", "--host", f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def test_the_official_cli_traceroute_telemetry_and_export_config_complete(mesh: VirtualMesh) -> None:
    alice = mesh.node("Alice")
    traced = meshtastic_cli(alice.port, "--traceroute", "!0bb00001")
    assert traced.returncode == 0, traced.stdout + traced.stderr
    assert re.search(r"!0a11ce00 --> !0e1a0001 \(.*dB\) --> !0bb00001", traced.stdout), traced.stdout
    assert "Route traced back to us" in traced.stdout, traced.stdout

    telemetry = meshtastic_cli(alice.port, "--request-telemetry", "--dest", "!0bb00001")
    assert telemetry.returncode == 0, telemetry.stdout + telemetry.stderr
    assert re.search(r"Battery level: \d+\.00%", telemetry.stdout), telemetry.stdout
    assert "Total channel utilization" in telemetry.stdout

    exported = meshtastic_cli(alice.port, "--export-config")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "owner: Alice Handheld" in exported.stdout and "owner_short: ALI" in exported.stdout
    assert "channel_url: https://meshtastic.org/e/#" in exported.stdout

    info = meshtastic_cli(alice.port, "--info")
    assert info.returncode == 0 and "Primary channel URL" in info.stdout, info.stdout + info.stderr


def test_the_cli_sees_positions_and_battery_in_the_node_db(mesh: VirtualMesh) -> None:
    share_position_and_telemetry(mesh)
    listed = meshtastic_cli(mesh.node("Alice").port, "--nodes")
    assert "47.4988°" in listed.stdout and "Hill Relay" in listed.stdout, listed.stdout + listed.stderr
    assert re.search(r"│ +\d+% +│", listed.stdout), listed.stdout  # a battery column filled


def ask(mesh: VirtualMesh, daemon: Daemon, text: str, timeout: float = 120) -> str:
    """Alice DMs the bot with the official CLI; the bot's whole answer as Alice heard it."""
    alice = mesh.node("Alice")
    before = len([h for h in alice.received if h.sender == BOT and h.portnum == TEXT])
    sent = meshtastic_cli(alice.port, "--sendtext", text, "--dest", "!0bb00001", "--ack")
    assert sent.returncode == 0, sent.stdout + sent.stderr

    def heard() -> list[str]:
        return [h.text or "" for h in alice.received if h.sender == BOT and h.portnum == TEXT][before:]

    wait_until(lambda: daemon.idle() and len(heard()) >= 1, timeout=timeout)
    return " ".join(text.removeprefix("🤖 ") for text in heard())


def share_position_and_telemetry(mesh: VirtualMesh) -> None:
    """Every node sends its Position, then its Telemetry, one flood at a time (so none collide)."""
    for node in mesh:
        for send in (node.broadcast_position, node.broadcast_telemetry):
            send()
            wait_until(lambda: mesh.air.idle(), timeout=20)


@pytest.mark.model
def test_the_commands_answer_with_the_directorys_facts(mesh: VirtualMesh, real_daemon) -> None:
    daemon = real_daemon(mesh.bot.port, **{"policy.channels": [{"index": 0}]})
    assert daemon.directory is not None
    # The node list came after the fast connect (nonce 69421): Hill and Alice are known before any packet.
    wait_until(lambda: daemon.directory.record(HILL) is not None, timeout=20)
    nodes = ask(mesh, daemon, "!nodes")
    assert re.search(r"\d+ nodes heard in 1h", nodes) and "ALI" in nodes, nodes

    assert ask(mesh, daemon, "!where").endswith("No position from you yet: share it in the app.")
    share_position_and_telemetry(mesh)
    hill = mesh.node("Hill").own_device_metrics()
    wait_until(
        lambda: (daemon.directory.record(HILL) or None) is not None and daemon.directory.record(HILL).device is not None
    )
    where = ask(mesh, daemon, "!where")
    assert "You: 47.37690,8.54170" in where and "bot BOT 19 km NE" in where and "nearest HILL 5.1 km NE" in where, where

    node = ask(mesh, daemon, "!node HILL")
    assert node.startswith("HILL (Hill Relay) !0e1a0001, heard") and "0 hops" not in node, node
    assert f"battery {hill.battery_level}%" in node and "from you" in node, node

    mesh_line = ask(mesh, daemon, "!mesh")
    assert re.search(r"channel util \d+\.\d%, air tx \d+\.\d%", mesh_line), mesh_line
    assert re.search(r"bot battery \d+%", mesh_line), mesh_line


@pytest.mark.model
def test_a_question_about_a_nodes_battery_is_answered_with_the_reported_figure(mesh, real_daemon) -> None:
    daemon = real_daemon(mesh.bot.port, **{"policy.channels": [{"index": 0}], "model.seed": 42})
    share_position_and_telemetry(mesh)
    wait_until(lambda: daemon.directory.record(HILL) is not None and daemon.directory.record(HILL).device is not None)
    level = daemon.directory.record(HILL).device.battery_level
    answer = ask(mesh, daemon, "What is the battery level of HILL?")
    assert f"{level}" in answer, answer
    assert ask(mesh, daemon, "!src").startswith("Source: node directory"), answer
