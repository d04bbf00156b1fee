"""The virtual mesh in virtual time: flooding, hops, air time, contention, duty cycle, ACKs, loss, determinism."""

from __future__ import annotations

import pytest

from meshbot.core import limits
from meshbot.core.clock import VirtualClock
from meshbot.sim.air.scheduler import Scheduler
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.node.records import HeardPacket
from tests.mesh_support import BOT, chain, topology
from tests.mesh_support import meshes as meshes  # a fixture: the alias marks the import as used

BROADCAST = limits.BROADCAST_NUM


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
    mesh = meshes(
        topology(
            [
                ("A", "handset", ["B", "C"]),
                ("B", "relay", ["C", "D"]),
                ("C", "relay", ["D"]),
                ("D", "bot", []),
            ]
        )
    )  # B and C hear each other, so they take turns instead of colliding at D
    mesh.node("A").send_text("one copy please")
    mesh.run_for(30)
    assert [h.text for h in texts(mesh.node("D"))] == ["one copy please"]
    relayed_by = {mesh.name_of(t.sender) for t in mesh.air.transmissions if t.kind == "relay"}
    assert {"B", "C"} <= relayed_by  # both routes carried it ...
    assert mesh.air.node_stats()[BOT].duplicates >= 1  # ... and D dropped the second copy


def test_a_dm_reaches_only_its_destination_and_keeps_its_channel_index(meshes):
    topo = topology(
        [("A", "handset", ["R"]), ("R", "relay", ["BOT", "C"]), ("BOT", "bot", []), ("C", "handset", [])],
        channels=["", "Ops"],
    )
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
    mesh = meshes(
        topology([("A", "handset", ["B"]), ("B", "handset", ["BOT"]), ("BOT", "bot", [])], modem_preset="LONG_FAST")
    )
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
    mesh = meshes(
        topology(
            [("A", "handset", ["R"]), ("R", "relay", ["BOT"]), ("BOT", "bot", [])],
            links=({"a": "A", "b": "R", "loss": 1.0},),
        )
    )
    a = mesh.node("A")
    packet_id = a.send_text("hello?", to=BOT)
    mesh.run_for(60)
    tries = [t for t in mesh.air.transmissions if t.packet_id == packet_id]
    assert [t.sender for t in tries] == [a.node_num] * limits.MAX_RETRANSMIT
    assert [(h.sender, h.request_id, h.error) for h in notes(a)] == [(a.node_num, packet_id, "MAX_RETRANSMIT")]
    assert a.sent[0].outcome == "MAX_RETRANSMIT"


def test_a_link_with_loss_one_never_delivers(meshes):
    mesh = meshes(
        topology([("A", "handset", ["BOT"]), ("BOT", "bot", [])], links=({"a": "A", "b": "BOT", "loss": 1.0},))
    )
    for i in range(5):
        mesh.node("A").send_text(f"lost {i}")
        mesh.run_for(3)
    assert texts(mesh.bot) == []
    assert mesh.report().lost == 5


def test_a_retried_dm_over_a_lossy_link_gets_through_and_acked(meshes):
    # Loss both ways on the first link: the seed decides which tries survive, deterministically.
    mesh = meshes(
        topology(
            [("A", "handset", ["R"]), ("R", "relay", ["BOT"]), ("BOT", "bot", [])],
            links=({"a": "A", "b": "R", "loss": 0.5},),
            seed=3,
        )
    )
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
        topo = topology(
            [("A", "handset", ["B", "C"]), ("B", "relay", ["BOT"]), ("C", "handset", ["BOT"]), ("BOT", "bot", [])],
            links=({"a": "A", "b": "B", "loss": 0.3}, {"a": "C", "b": "BOT", "loss": 0.3}),
            seed=seed,
        )
        mesh = meshes(topo, announce=True)
        mesh.settle()
        _traffic(mesh)
        return mesh.report().seeded()

    first = run(11)
    assert first["frames"]["own"] > 0 and first["lost"] > 0
    assert run(11) == first
    assert run(12) != first


def test_a_rebooted_mesh_numbers_its_packets_anew_and_keeps_its_seeded_draws(meshes):
    # The firmware starts its packet ids at random at boot: a bot that remembers (sender, id) pairs
    # across its own restarts must not take the next run's first DM for one it has already seen.
    def boot() -> tuple[list[int], dict]:
        topo = topology([("A", "handset", ["B"]), ("B", "relay", ["BOT"]), ("BOT", "bot", [])], seed=3)
        mesh = meshes(topo, announce=True)
        mesh.settle()
        _traffic_from(mesh, "A")
        return [sent.packet_id for sent in mesh.node("A").sent], mesh.report().seeded()

    ids_first, report_first = boot()
    ids_again, report_again = boot()
    assert len(ids_first) == len(ids_again) == 6
    assert not set(ids_first) & set(ids_again)
    assert report_again == report_first


def _traffic_from(mesh: VirtualMesh, name: str) -> None:
    for round_ in range(6):
        mesh.node(name).send_text(f"{name} says {round_}", to=BOT if round_ % 2 else BROADCAST)
        mesh.run_for(7)
    mesh.run_for(60)


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
