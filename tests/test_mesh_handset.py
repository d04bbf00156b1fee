"""The virtual mesh as a person uses it: the real TCPInterface on a handset, the console, `meshbot sim`, the demo."""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from meshtastic.tcp_interface import TCPInterface
from pubsub import pub

from meshbot.core import airtime, limits
from meshbot.sim.app.cli import register
from meshbot.sim.app.console import HandsetConsole
from meshbot.sim.app.demo import Demo
from meshbot.sim.app.topology import read_topology_text
from tests.mesh_support import BOT, chain, topology
from tests.mesh_support import meshes as meshes  # a fixture: the alias marks the import as used

WAIT = 10.0  # real seconds a threaded test waits for what takes well under one


# ----- the real client on a handset ----------------------------------------------------------


_routing: queue.Queue = queue.Queue()


def _on_routing(packet: dict, interface: object) -> None:  # pypubsub keeps listeners weakly: module level
    _routing.put(packet)


class Responses:
    """onResponse callbacks; the name makes the library pass plain ACKs too."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def onAckNak(self, packet: dict) -> None:
        self.q.put(packet)


@pytest.fixture
def client() -> Iterator[Callable[[int], TCPInterface]]:
    made: list[TCPInterface] = []
    while not _routing.empty():
        _routing.get_nowait()
    pub.subscribe(_on_routing, "meshtastic.receive.routing")

    def connect(port: int) -> TCPInterface:
        iface = TCPInterface(hostname="127.0.0.1", portNumber=port, timeout=10)
        made.append(iface)
        return iface

    yield connect
    pub.unsubscribe(_on_routing, "meshtastic.receive.routing")
    for iface in made:
        iface.close()


def test_the_destinations_ack_crosses_two_hops_back_to_the_sending_client(meshes, client):
    mesh = meshes(chain(4, time_scale=20.0), manual=False, announce=True)
    assert mesh.settle(WAIT)
    iface = client(mesh.node("N0").port)
    responses = Responses()
    sent = iface.sendText("are you there?", destinationId=BOT, wantAck=True, onResponse=responses.onAckNak)

    # The firmware reports the first relay it overhears as an implicit ACK from our own node
    # (ReliableRouter, DMs included), and that is what onAckNak gets: the library drops the handler.
    implicit = responses.q.get(timeout=WAIT)
    assert (implicit["from"], implicit["decoded"]["requestId"]) == (mesh.node("N0").node_num, sent.id)
    # Then the destination's own ACK floods back over both relays and reaches the client.
    deadline = time.monotonic() + WAIT
    while True:
        packet = _routing.get(timeout=max(deadline - time.monotonic(), 0.01))
        if packet["from"] == BOT:
            break
    assert packet["decoded"]["requestId"] == sent.id and packet["to"] == mesh.node("N0").node_num
    assert packet["decoded"]["routing"].get("errorReason", "NONE") == "NONE"
    assert packet["hopStart"] - packet["hopLimit"] == 2


def test_a_client_on_a_handset_sees_the_whole_mesh(meshes, client):
    topo = topology(
        [
            ("Alice", "handset", ["Relay"]),
            ("Relay", "relay", ["BOT", "Carol"]),
            ("BOT", "bot", []),
            ("Carol", "handset", []),
        ],
        time_scale=20.0,
    )
    mesh = meshes(topo, manual=False, announce=True)
    assert mesh.settle(WAIT)
    iface = client(mesh.node("Alice").port)
    by_num = {num: info for num, info in iface.nodesByNum.items()}
    assert {mesh.name_of(num) for num in by_num} == {"Alice", "Relay", "BOT", "Carol"}
    assert iface.nodes["!0bb00001"]["user"]["longName"] == "BOT"
    assert by_num[BOT]["hopsAway"] == 1 and by_num[mesh.node("Relay").node_num].get("hopsAway", 0) == 0


# ----- what a person sees ------------------------------------------------------------------------


def test_the_handset_console_sends_and_shows_arrivals_with_hops_and_air_time(meshes):
    mesh = meshes(topology([("Alice", "handset", ["Relay"]), ("Relay", "relay", ["BOT"]), ("BOT", "bot", [])]))
    out = io.StringIO()
    console = HandsetConsole(mesh, "Alice", out)
    console.attach()
    console.handle("hello bot")
    mesh.run_for(10)
    mesh.bot.send_text("1/1 hi there", to=mesh.node("Alice").node_num)
    mesh.run_for(10)
    console.handle("/ch 0 hi all")
    console.handle("x" * 201)
    console.handle("/nodes")
    assert console.handle("/quit") is False
    shown = out.getvalue()
    assert "you → BOT: hello bot" in shown
    assert "delivered: ACK from BOT (1 hop)" in shown
    on_air = airtime.time_on_air_s(limits.text_frame_len(12), airtime.preset("SHORT_FAST"))
    assert f"BOT → you (1 hop): 1/1 hi there (12 B, {on_air:.2f} s on air)" in shown
    assert "you → #ch0: hi all" in shown
    assert "too long: 201 bytes" in shown


def test_meshbot_sim_runs_until_quit_and_prints_the_report(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    topo = read_topology_text("demo")[0].replace("time_scale = 1.0", "time_scale = 20.0")
    path = tmp_path / "demo.toml"
    path.write_text(topo)
    args = parser.parse_args(["sim", "--topology", str(path), "--handset", "Alice", "--seed", "5"])
    out = io.StringIO()
    done = threading.Event()
    code: list[int] = []
    thread = threading.Thread(
        target=lambda: (code.append(args.func(args, stdin=io.StringIO("/nodes\n/quit\n"), stdout=out)), done.set())
    )
    thread.start()
    assert done.wait(WAIT), out.getvalue()
    shown = out.getvalue()
    assert code == [0]
    assert "virtual mesh: 4 nodes, US SHORT_FAST, hop limit 3, seed 5" in shown
    assert "handset --host 127.0.0.1:" in shown  # `meshbot handset`, spelled to work where it is shown
    assert "mesh report:" in shown and "Relay" in shown


@pytest.mark.parametrize(
    "flags, says",
    [
        ([], "meshbot sim: no node 'Nobody' in city"),
        (["--topology", "demo"], "meshbot sim: no node 'Nobody' in demo"),
        (["--topology", "town"], "meshbot sim: no topology named 'town': give one of city, demo, mqtt or the path"),
    ],
)
def test_meshbot_sim_takes_the_configs_topology_unless_the_flag_names_one(tmp_path, flags, says):
    import argparse

    config = tmp_path / "meshbot.toml"
    config.write_text('[sim]\ntopology = "city"\n')
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sim", "--config", str(config), "--handset", "Nobody", *flags])
    out = io.StringIO()
    assert args.func(args, stdin=io.StringIO(), stdout=out) == 2
    assert out.getvalue().startswith(says)


def test_the_demo_asks_the_bot_and_shows_the_handset_screen(tmp_path):
    fast = read_topology_text("demo")[0].replace("time_scale = 1.0", "time_scale = 20.0")
    path = tmp_path / "demo.toml"
    path.write_text(fast)
    out = io.StringIO()
    demo = Demo(path, out=out, stdin=io.StringIO(), dm_after_s=1.0, channel_after_s=4.0)
    demo.start()
    try:
        assert demo.bot_port > 0
        demo.after_daemon_started()
        bot = demo.mesh.bot
        samples = {"What is LoRa?", "!ai how far can a mesh reach?"}
        # The DM waits for the handset to hear the bot's key (a legacy DM is refused), so it may come second.
        got = bot.received_log.wait_for(lambda hs: samples <= {h.text for h in hs}, WAIT)
        asked = {h.text for h in got if h.portnum == "TEXT_MESSAGE_APP"}
        assert asked == samples
        assert next(h for h in got if h.text == "What is LoRa?").pki  # sealed for the bot, as firmware 2.7 does
    finally:
        demo.stop()
    shown = out.getvalue()
    assert "--to '!0bb00001'" in shown and "(Bob's screen)" in shown and "you → BOT: What is LoRa?" in shown
    assert "mesh report:" in shown
