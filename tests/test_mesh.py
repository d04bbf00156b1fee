"""The virtual mesh: flooding, hops, air time, contention, duty cycle, ACKs, loss, determinism, and
the real meshtastic TCPInterface on a handset node.

Most tests run the mesh in manual mode: a VirtualClock that moves only when the test runs the
mesh, so every draw of loss and contention is deterministic. Tests with a TCP client run it
threaded on a ScaledClock, faster than real time.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from meshtastic.tcp_interface import TCPInterface
from pubsub import pub

from meshbot import airtime, limits
from meshbot.clock import VirtualClock
from meshbot.sim.cli import register
from meshbot.sim.console import HandsetConsole
from meshbot.sim.demo import Demo
from meshbot.sim.network import VirtualMesh
from meshbot.sim.records import HeardPacket
from meshbot.sim.scheduler import Scheduler
from meshbot.sim.topology import TopologyError, load_topology, parse_topology

BOT = 0x0BB0_0001
CONFIG = Path(__file__).resolve().parents[1] / "config"
WAIT = 10.0  # real seconds a threaded test waits for what takes well under one
BROADCAST = limits.BROADCAST_NUM


def topology(nodes: list[tuple[str, str, list[str]]], *, links: tuple[dict, ...] = (), **mesh: Any):
    """Nodes as (name, role, neighbours); the bot gets !0bb00001, the others !0a0000NN."""
    specs = [
        {"name": name, "num": BOT if role == "bot" else 0x0A00_0000 + i, "role": role, "neighbours": nbs}
        for i, (name, role, nbs) in enumerate(nodes)
    ]
    settings = {"seed": 1, "modem_preset": "SHORT_FAST", "region": "US", **mesh}
    return parse_topology({"mesh": settings, "nodes": specs, "links": list(links)})


def chain(length: int, **mesh: Any):
    """N0 (a handset) - N1 - ... - the bot at the far end; the middle nodes are relays."""
    names = [f"N{i}" for i in range(length)]
    roles = ["handset"] + ["relay"] * (length - 2) + ["bot"]
    return topology([(n, r, names[i + 1:i + 2]) for i, (n, r) in enumerate(zip(names, roles))], **mesh)


@pytest.fixture
def meshes() -> Iterator[Callable[..., VirtualMesh]]:
    made: list[VirtualMesh] = []

    def make(topo, *, manual: bool = True, announce: bool = False) -> VirtualMesh:
        mesh = VirtualMesh(topo, manual=manual)
        mesh.start(announce=announce)
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.stop()


def texts(node) -> list[HeardPacket]:
    return [h for h in node.received if h.portnum == "TEXT_MESSAGE_APP"]


def notes(node) -> list[HeardPacket]:
    """ACKs and NAKs the node's client got."""
    return [h for h in node.received if h.error is not None]


# ----- flooding and hops ---------------------------------------------------------------------


def test_flooding_stops_at_the_hop_limit(meshes):
    mesh = meshes(chain(6, hop_limit=3))
    mesh.node("N0").send_text("anyone out there?")
    mesh.run_for(30)
    reached = [name for name in ("N1", "N2", "N3", "N4", "N5") if texts(mesh.node(name))]
    assert reached == ["N1", "N2", "N3", "N4"]  # N4 hears the last relay with hop_limit 0
    assert mesh.report().frames["relay"] == 3
    assert mesh.air.node_stats()[mesh.node("N4").node_num].hop_limit_stops == 1


def test_hop_start_minus_hop_limit_counts_the_relays_on_the_way(meshes):
    mesh = meshes(chain(4, hop_limit=3))
    mesh.node("N0").send_text("ping")
    mesh.run_for(30)
    for distance, name in enumerate(("N1", "N2", "N3"), start=1):
        [heard] = texts(mesh.node(name))
        assert (heard.hop_start, heard.hop_limit) == (3, 3 - (distance - 1))
        assert heard.hops == distance - 1


def test_a_diamond_delivers_once_and_suppresses_the_duplicate(meshes):
    mesh = meshes(topology([
        ("A", "handset", ["B", "C"]), ("B", "relay", ["C", "D"]), ("C", "relay", ["D"]), ("D", "bot", []),
    ]))  # B and C hear each other, so they take turns instead of colliding at D
    mesh.node("A").send_text("one copy please")
    mesh.run_for(30)
    assert [h.text for h in texts(mesh.node("D"))] == ["one copy please"]
    relayed_by = {mesh.name_of(t.sender) for t in mesh.air.transmissions if t.kind == "relay"}
    assert {"B", "C"} <= relayed_by  # both routes carried it ...
    assert mesh.air.node_stats()[BOT].duplicates >= 1  # ... and D dropped the second copy


def test_a_dm_reaches_only_its_destination_and_keeps_its_channel_index(meshes):
    topo = topology([("A", "handset", ["R"]), ("R", "relay", ["BOT", "C"]), ("BOT", "bot", []), ("C", "handset", [])],
                    channels=["", "Ops"])
    mesh = meshes(topo)
    a = mesh.node("A")
    a.send_text("just for the bot", to=BOT)
    mesh.run_for(5)
    a.send_text("ops update", channel=1)
    mesh.run_for(20)
    assert [(h.text, h.to) for h in texts(mesh.bot)] == [("just for the bot", BOT), ("ops update", BROADCAST)]
    assert [h.text for h in texts(mesh.node("R"))] == ["ops update"]  # relays pass DMs on, never show them
    assert [(h.text, h.channel) for h in texts(mesh.node("C"))] == [("ops update", 1)]


# ----- air time, contention, duty cycle, rate limit -------------------------------------------


def test_a_200_byte_text_on_long_fast_takes_1_9_s_of_air_time(meshes):
    mesh = meshes(topology([("A", "handset", ["BOT"]), ("BOT", "bot", [])], modem_preset="LONG_FAST"))
    a = mesh.node("A")
    a.send_text("x" * 200)
    mesh.run_for(10)
    [tx] = [t for t in mesh.air.transmissions if t.kind == "own"]
    accounted = mesh.air.node_stats()[a.node_num].airtime_s
    assert accounted == pytest.approx(1.9, rel=0.05)
    assert tx.end - tx.start == pytest.approx(accounted)
    assert texts(mesh.bot)[0].airtime_s == pytest.approx(accounted)


def test_neighbours_take_turns_on_air(meshes):
    mesh = meshes(topology([("A", "handset", ["B"]), ("B", "handset", ["BOT"]), ("BOT", "bot", [])],
                           modem_preset="LONG_FAST"))
    mesh.node("A").send_text("a" * 150)
    mesh.node("B").send_text("b" * 150)  # the same instant
    mesh.run_for(30)
    first, second = sorted((t for t in mesh.air.transmissions if t.kind == "own"), key=lambda t: t.start)
    assert first.end - first.start > 1.0  # long enough that an overlap could not hide
    assert second.start >= first.end
    assert [h.text[0] for h in texts(mesh.bot)] == ["b"]  # and nothing collided at the bot


def test_an_exhausted_duty_cycle_is_naked_duty_cycle_limit(meshes):
    # UA_868 allows 1% of the hour: 36 s, about 17 full texts on LONG_FAST.
    # A alone on the air, so that its frames leave as soon as they are sent.
    mesh = meshes(topology([("A", "handset", []), ("BOT", "bot", [])], modem_preset="LONG_FAST", region="UA_868"))
    a = mesh.node("A")
    for _ in range(25):
        a.send_text("d" * 200)
        mesh.run_for(limits.TEXT_RATE_LIMIT_S + 0.5)
    outcomes = [p.outcome for p in a.sent]
    first_refused = outcomes.index("DUTY_CYCLE_LIMIT")
    assert set(outcomes[:first_refused]) == {"ACK"} and set(outcomes[first_refused:]) == {"DUTY_CYCLE_LIMIT"}
    on_air = mesh.air.node_stats()[a.node_num].airtime_s
    assert 36.0 < on_air < 36.0 + 2.0  # refused once the share was spent, not before
    assert {h.error for h in notes(a)} == {"DUTY_CYCLE_LIMIT"}
    assert all(h.sender == a.node_num for h in notes(a))  # the NAK comes from the handset's own node
    mesh.run_for(3600)  # an hour later the window has rolled on
    a.send_text("back")
    mesh.run_for(5)
    assert a.sent[-1].outcome == "ACK"


def test_two_texts_within_two_seconds_are_rate_limited(meshes):
    mesh = meshes(chain(3))
    a = mesh.node("N0")
    a.send_text("one", to=BOT)
    mesh.run_for(1.0)
    second = a.send_text("two", to=BOT)
    mesh.run_for(limits.TEXT_RATE_LIMIT_S)
    a.send_text("three", to=BOT)
    mesh.run_for(10)
    assert [p.outcome for p in a.sent] == ["ACK", "RATE_LIMIT_EXCEEDED", "ACK"]
    [nak] = [h for h in notes(a) if h.request_id == second]
    assert (nak.sender, nak.error) == (a.node_num, "RATE_LIMIT_EXCEEDED")
    assert [h.text for h in texts(mesh.bot)] == ["one", "three"]


# ----- reliability ---------------------------------------------------------------------------


def test_a_dm_to_an_unreachable_node_ends_in_max_retransmit(meshes):
    mesh = meshes(topology([("A", "handset", ["R"]), ("R", "relay", ["BOT"]), ("BOT", "bot", [])],
                           links=({"a": "A", "b": "R", "loss": 1.0},)))
    a = mesh.node("A")
    packet_id = a.send_text("hello?", to=BOT)
    mesh.run_for(60)
    tries = [t for t in mesh.air.transmissions if t.packet_id == packet_id]
    assert [t.sender for t in tries] == [a.node_num] * limits.MAX_RETRANSMIT
    assert [(h.sender, h.request_id, h.error) for h in notes(a)] == [(a.node_num, packet_id, "MAX_RETRANSMIT")]
    assert a.sent[0].outcome == "MAX_RETRANSMIT"


def test_a_link_with_loss_one_never_delivers(meshes):
    mesh = meshes(topology([("A", "handset", ["BOT"]), ("BOT", "bot", [])],
                           links=({"a": "A", "b": "BOT", "loss": 1.0},)))
    for i in range(5):
        mesh.node("A").send_text(f"lost {i}")
        mesh.run_for(3)
    assert texts(mesh.bot) == []
    assert mesh.report().lost == 5


def test_a_retried_dm_over_a_lossy_link_gets_through_and_acked(meshes):
    # Loss both ways on the first link: the seed decides which tries survive, deterministically.
    mesh = meshes(topology([("A", "handset", ["R"]), ("R", "relay", ["BOT"]), ("BOT", "bot", [])],
                           links=({"a": "A", "b": "R", "loss": 0.5},), seed=3))
    a = mesh.node("A")
    a.send_text("through the noise", to=BOT)
    mesh.run_for(60)
    assert [h.text for h in texts(mesh.bot)] == ["through the noise"]
    assert a.sent[0].outcome == "ACK"


def _traffic(mesh: VirtualMesh) -> None:
    for round_ in range(6):
        for name in ("A", "C"):
            mesh.node(name).send_text(f"{name} says {round_}", to=BOT if round_ % 2 else BROADCAST)
        mesh.run_for(7)
    mesh.run_for(60)


def test_the_same_seed_gives_the_same_report(meshes):
    def run(seed: int) -> dict:
        topo = topology([("A", "handset", ["B", "C"]), ("B", "relay", ["BOT"]), ("C", "handset", ["BOT"]),
                         ("BOT", "bot", [])], links=({"a": "A", "b": "B", "loss": 0.3}, {"a": "C", "b": "BOT", "loss": 0.3}),
                        seed=seed)
        mesh = meshes(topo, announce=True)
        mesh.settle()
        _traffic(mesh)
        return mesh.report().seeded()

    first = run(11)
    assert first["frames"]["own"] > 0 and first["lost"] > 0
    assert run(11) == first
    assert run(12) != first


# ----- the real client on a handset ----------------------------------------------------------


_routing: queue.Queue = queue.Queue()


def _on_routing(packet: dict, interface: object) -> None:  # pypubsub keeps listeners weakly: module level
    _routing.put(packet)


class Responses:
    """onResponse callbacks; the name makes the library pass plain ACKs too."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def onAckNak(self, packet: dict) -> None:  # noqa: N802 - the library matches this name
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
    topo = topology([("Alice", "handset", ["Relay"]), ("Relay", "relay", ["BOT", "Carol"]), ("BOT", "bot", []),
                     ("Carol", "handset", [])], time_scale=20.0)
    mesh = meshes(topo, manual=False, announce=True)
    assert mesh.settle(WAIT)
    iface = client(mesh.node("Alice").port)
    by_num = {num: info for num, info in iface.nodesByNum.items()}
    assert {mesh.name_of(num) for num in by_num} == {"Alice", "Relay", "BOT", "Carol"}
    assert iface.nodes["!0bb00001"]["user"]["longName"] == "BOT"
    assert by_num[BOT]["hopsAway"] == 1 and by_num[mesh.node("Relay").node_num].get("hopsAway", 0) == 0


# ----- the topology file ---------------------------------------------------------------------


GOOD_NODE = '[[nodes]]\nname = "BOT"\nnum = 1\nrole = "bot"\n'


@pytest.mark.parametrize("text, named", [
    ('[mesh]\nsede = 1\n' + GOOD_NODE, "mesh.sede"),
    (GOOD_NODE + 'nmae = "x"\n', "nodes[0].nmae"),
    ('[mesh]\nmodem_preset = "LONG_FASTER"\n' + GOOD_NODE, "mesh.modem_preset"),
])
def test_the_loader_names_the_bad_key(tmp_path, text, named):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    assert named in str(caught.value)


def test_the_loader_rejects_an_unknown_neighbour_and_a_missing_bot():
    with pytest.raises(TopologyError, match="neighbour 'Bobb' is not a node"):
        topology([("A", "handset", ["Bobb"]), ("BOT", "bot", [])])
    with pytest.raises(TopologyError, match="exactly one node must have role 'bot'"):
        topology([("A", "handset", [])])


@pytest.mark.parametrize("name", ["sim-demo.toml", "sim-city.toml"])
def test_the_shipped_topologies_load_and_are_connected(name):
    topo = load_topology(CONFIG / name)
    table = topo.link_table()
    reached, todo = {topo.bot.node_num}, [topo.bot.node_num]
    while todo:
        for other in table[todo.pop()]:
            if other not in reached:
                reached.add(other)
                todo.append(other)
    assert reached == {n.node_num for n in topo.nodes}
    assert topo.bot.node_num == BOT


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
    topo = (CONFIG / "sim-demo.toml").read_text().replace("time_scale = 1.0", "time_scale = 20.0")
    path = tmp_path / "demo.toml"
    path.write_text(topo)
    args = parser.parse_args(["sim", "--topology", str(path), "--handset", "Alice", "--seed", "5"])
    out = io.StringIO()
    done = threading.Event()
    code: list[int] = []
    thread = threading.Thread(target=lambda: (code.append(args.func(args, stdin=io.StringIO("/nodes\n/quit\n"),
                                                                    stdout=out)), done.set()))
    thread.start()
    assert done.wait(WAIT), out.getvalue()
    shown = out.getvalue()
    assert code == [0]
    assert "virtual mesh: 3 nodes, US SHORT_FAST, hop limit 3, seed 5" in shown
    assert "meshtastic --host 127.0.0.1:" in shown
    assert "mesh report:" in shown and "Relay" in shown


def test_the_demo_asks_the_bot_and_shows_the_handset_screen(tmp_path, monkeypatch):
    fast = (CONFIG / "sim-demo.toml").read_text().replace("time_scale = 1.0", "time_scale = 20.0")
    path = tmp_path / "demo.toml"
    path.write_text(fast)
    monkeypatch.setenv("MESHBOT_SIM_TOPOLOGY", str(path))
    out = io.StringIO()
    demo = Demo(out=out, stdin=io.StringIO(), dm_after_s=1.0, channel_after_s=4.0)
    demo.start()
    try:
        assert demo.bot_port > 0
        demo.after_daemon_started()
        bot = demo.mesh.bot
        got = bot.received_log.wait_for(lambda hs: sum(h.portnum == "TEXT_MESSAGE_APP" for h in hs) >= 2, WAIT)
        asked = {h.text for h in got if h.portnum == "TEXT_MESSAGE_APP"}
        assert asked == {"What is LoRa?", "!ai how far can a mesh reach?"}
    finally:
        demo.stop()
    shown = out.getvalue()
    assert "--dest '!0bb00001'" in shown and "you → BOT: What is LoRa?" in shown
    assert "mesh report:" in shown


# ----- the clock-driven scheduler --------------------------------------------------------------


def test_a_manual_scheduler_runs_timers_in_order_in_virtual_time():
    clock = VirtualClock(start=100.0)
    scheduler = Scheduler(clock=clock, manual=True)
    fired: list[tuple[str, float]] = []
    scheduler.call_later(5.0, lambda: fired.append(("b", clock.now())))
    scheduler.call_later(1.0, lambda: scheduler.call_later(1.0, lambda: fired.append(("c", clock.now()))))
    scheduler.call_later(1.0, lambda: fired.append(("a", clock.now())))
    scheduler.run_for(4.0)
    assert fired == [("a", 101.0), ("c", 102.0)] and clock.now() == 104.0
    scheduler.run_for(10.0)
    assert fired[-1] == ("b", 105.0)
