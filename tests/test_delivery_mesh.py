"""Delivery edge cases on the virtual mesh, with the real `meshtastic` TCPInterface in the daemon."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.clock import ScaledClock
from meshbot.core.config import load_config
from meshbot.radios.meshtastic_lib import MeshtasticRadio
from meshbot.service.daemon import Daemon
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.node.node import VirtualNode
from tests.conftest import wait_until
from tests.fakes import ALICE, FakeModel
from tests.faults_support import LONG_ANSWER, GatedModel, events
from tests.mesh_support import BOT, topology
from tests.mesh_support import meshes as meshes  # a fixture: the alias marks the import as used

WAIT = 20.0  # real seconds; the mesh runs 20x faster than real time


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[[VirtualMesh, GatedModel], Daemon]]:
    made: list[Daemon] = []

    def start(mesh: VirtualMesh, model: GatedModel) -> Daemon:
        settings = {
            "radio.host": f"127.0.0.1:{mesh.bot.port}",
            "store.path": str(tmp_path / "meshbot.db"),
            "join.window_s": 0,
            "mesh.min_gap_s": 2.0,
        }
        cfg = load_config(overrides=settings, environ={})
        radio = MeshtasticRadio(cfg.radio, backoff_s=(0.2, 1.0))
        daemon = build_daemon(cfg, radio=radio, model=model, clock=mesh.clock)
        daemon.start()
        made.append(daemon)
        return daemon

    yield start
    for daemon in made:
        daemon.stop(grace_s=2.0)


def bot_texts(mesh: VirtualMesh, name: str) -> list[str]:
    """The texts from the bot that a node showed its user (duplicates it dropped never get there)."""
    return [h.text or "" for h in mesh.node(name).received if h.sender == BOT and h.portnum == "TEXT_MESSAGE_APP"]


def test_a_handset_whose_acks_are_lost_shows_the_fragment_once_and_nothing_after_it(
    meshes, run_daemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    # The nodes announce first, so Alice's DMs are PKI-sealed: the bot refuses a legacy one (issue 17).
    mesh = meshes(
        topology([("Alice", "handset", ["BOT"]), ("BOT", "bot", [])], time_scale=20.0), manual=False, announce=True
    )
    assert mesh.settle(WAIT)
    model = GatedModel()
    model.queue(LONG_ANSWER)
    daemon = run_daemon(mesh, model)
    wait_until(lambda: mesh.bot.client_connected and daemon.radio_up.is_set(), timeout=WAIT)
    alice = mesh.node("Alice")
    alice.send_text("tell me about lora", to=BOT)
    wait_until(lambda: len(events(caplog, "queued")) == 1, timeout=WAIT)
    # From here Alice hears the bot, but the bot never hears her ACKs: its node sends fragment 1 three times under
    # one id, Alice's node drops the two copies (and ACKs them again, in vain), and the node gives up.
    mesh.air.set_loss(alice.node_num, BOT, 1.0)
    model.gate.set()
    wait_until(lambda: len(events(caplog, "unreachable")) == 1, timeout=WAIT)
    wait_until(daemon.idle, timeout=WAIT)
    shown = bot_texts(mesh, "Alice")
    assert len(shown) == 1 and shown[0].removeprefix("🤖 ").startswith("1/+")
    on_air = [t for t in mesh.air.transmissions if t.origin == BOT and t.kind == "own"]
    assert len(on_air) == 3 and len({t.packet_id for t in on_air}) == 1  # the node's own tries, one id
    # Back in range, "more" gets the answer from where it was lost.
    mesh.air.set_loss(alice.node_num, BOT, 0.0)
    alice.send_text("more", to=BOT)
    wait_until(lambda: len(bot_texts(mesh, "Alice")) >= 2, timeout=WAIT)
    assert bot_texts(mesh, "Alice")[1] == shown[0]


def test_after_a_reconnect_an_unacked_fragment_goes_again_at_once_under_its_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The node is still trying to reach Alice when the TCP link drops; the link comes back long before
    # ack_timeout_s. The copy goes over the new connection under the same id (a node takes a repeated id
    # from a new client connection), so Alice's node would drop it if it had the first.
    caplog.set_level(logging.INFO, logger="meshbot")
    clock = ScaledClock(5.0)
    node = VirtualNode(BOT, region="US", peers=[(ALICE, "Alice", "ALI")], clock=clock, retransmit_s=30.0)
    node.start()
    node.air.unreachable.add(ALICE)
    model = FakeModel().queue("A short answer that fits one fragment.")
    settings = {
        "radio.host": f"127.0.0.1:{node.port}",
        "store.path": str(tmp_path / "meshbot.db"),
        "join.window_s": 0,
        "mesh.min_gap_s": 2.0,
    }
    cfg = load_config(overrides=settings, environ={})
    daemon = build_daemon(cfg, radio=MeshtasticRadio(cfg.radio, backoff_s=(0.2, 1.0)), model=model, clock=clock)
    daemon.start()
    try:
        wait_until(lambda: node.handshakes == 1 and daemon.radio_up.is_set(), timeout=WAIT)
        node.inject_text(ALICE, "hello?", packet_id=501)
        wait_until(lambda: len(node.sent) == 1, timeout=WAIT)
        first = node.sent[0]  # on air, no ACK yet: the node keeps retrying
        assert first.outcome == "PENDING"
        node.air.unreachable.discard(ALICE)
        assert node.drop_client(reset=True)
        wait_until(lambda: len(node.sent) == 2 and node.sent[1].outcome == "ACK", timeout=WAIT)
        again = node.sent[1]
        assert again.packet_id == first.packet_id and again.text == first.text
        assert again.at - first.at < cfg.mesh.ack_timeout_s  # not a whole ACK wait later
        assert len(events(caplog, "resent-after-reconnect")) == 1
        wait_until(daemon.idle, timeout=WAIT)
        assert not events(caplog, "unreachable")
    finally:
        daemon.stop(grace_s=2.0)
        node.stop()


def test_a_copy_after_a_reconnect_shows_once_on_a_handset_that_already_has_it(
    meshes, run_daemon, caplog: pytest.LogCaptureFixture
) -> None:
    # Alice gets the fragment, but her ACKs are lost; the bot's link drops while its node still retries. The
    # copy after the reconnect goes under the same id: her node drops it and ACKs again, and once her ACKs get
    # through the answer is done. Under a new id she would see the text twice.
    caplog.set_level(logging.INFO, logger="meshbot")
    topo = topology([("Alice", "handset", ["BOT"]), ("BOT", "bot", [])], time_scale=5.0, modem_preset="LONG_FAST")
    mesh = meshes(topo, manual=False, announce=True)  # keys known: Alice's DMs are PKI-sealed (issue 17)
    assert mesh.settle(WAIT)
    model = GatedModel()
    model.queue("A short answer that fits one fragment.")
    daemon = run_daemon(mesh, model)
    wait_until(lambda: mesh.bot.client_connected and daemon.radio_up.is_set(), timeout=WAIT)
    alice = mesh.node("Alice")
    alice.send_text("hello bot", to=BOT)
    wait_until(lambda: len(events(caplog, "queued")) == 1, timeout=WAIT)
    mesh.air.set_loss(alice.node_num, BOT, 1.0)
    model.gate.set()
    wait_until(lambda: len(bot_texts(mesh, "Alice")) == 1, timeout=WAIT)  # she has it; her ACK is lost
    assert mesh.bot.drop_client(reset=True)
    wait_until(lambda: len(mesh.bot.sent) == 2, timeout=WAIT)  # the copy, over the new connection
    mesh.air.set_loss(alice.node_num, BOT, 0.0)
    wait_until(lambda: mesh.bot.sent[1].outcome == "ACK", timeout=WAIT)
    wait_until(daemon.idle, timeout=WAIT)
    first, copy = mesh.bot.sent
    assert copy.packet_id == first.packet_id
    assert bot_texts(mesh, "Alice") == [first.text]  # once
    assert not events(caplog, "unreachable")
