"""The mesh commands and the mesh facts in the prompt, through a daemon on fakes (the directory is real)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from meshbot.core.directory import DeviceMetrics, EnvironmentMetrics, Heard, NodeReport, NodeUser, Position
from meshbot.service.daemon import Daemon
from tests.conftest import wait_until
from tests.fakes import AI_TAG, ALICE, BOB, BOT_NUM, FakeModel, FakeRadio, broadcast, dm

BRAVO = 0x0B5A_0042
ZURICH = Position(473_769_000, 85_417_000)
WINTERTHUR = Position(474_988_000, 87_237_000)  # 19 km NE of Zurich
BADEN = Position(474_733_000, 83_064_000)  # 20 km NW of Zurich


def reply(daemon: Daemon, radio: FakeRadio, msg) -> str:
    before = len(radio.sent)
    radio.receive(msg)
    wait_until(lambda: daemon.idle() and len(radio.sent) > before)
    new = radio.sent[before:]
    assert len(new) == 1, [s.message.text for s in new]
    assert len(new[0].message.text.encode()) <= 200
    return new[0].message.text.removeprefix(AI_TAG)


def hear_the_mesh(radio: FakeRadio) -> None:
    now = time.time()
    radio.hear(NodeReport(BOT_NUM, position=ZURICH, device=DeviceMetrics(95, 4.1, 14.25, 2.5, at=now), is_self=True))
    radio.hear(
        NodeReport(BRAVO, heard=Heard(now - 120, snr=6.5, rssi=-80, hops=2), user=NodeUser("BRVO", "Bravo Base"))
    )
    radio.hear(NodeReport(BRAVO, device=DeviceMetrics(battery_level=87, voltage=3.98, at=now - 100)))
    radio.hear(NodeReport(BRAVO, position=Position(WINTERTHUR.latitude_i, WINTERTHUR.longitude_i, at=now - 100)))
    radio.hear(NodeReport(BOB, heard=Heard(now - 7200, snr=-4.0, hops=0), user=NodeUser("BOB"), position=BADEN))


@pytest.fixture
def daemon(make_daemon, radio: FakeRadio) -> Daemon:
    bot = make_daemon(**{"policy.channels": [{"index": 1}]})
    hear_the_mesh(radio)
    return bot


def test_nodes_counts_and_lists_the_latest(daemon: Daemon, radio: FakeRadio, model: FakeModel) -> None:
    text = reply(daemon, radio, dm("!nodes"))
    assert text.startswith("1 nodes heard in 1h, 2 in 24h:")
    assert "BRVO 2 hops SNR 6.5dB 2m" in text and "BOB direct SNR -4.0dB 2h" in text
    assert model.requests == []  # never the model


def test_where_without_a_position_says_how_to_share_one(daemon: Daemon, radio: FakeRadio) -> None:
    assert reply(daemon, radio, dm("!where")) == "No position from you yet: share it in the app."


def test_where_gives_the_askers_spot_and_the_way_to_the_bot_and_the_nearest(daemon, radio: FakeRadio) -> None:
    radio.hear(NodeReport(ALICE, heard=Heard(time.time()), position=dataclasses.replace(WINTERTHUR, at=time.time())))
    text = reply(daemon, radio, dm("!where"))
    assert text.startswith("You: 47.49880,8.72370, just now;")
    assert "bot BOT 19 km SW" in text
    assert "nearest BRVO 0 m" in text  # BRVO shares Alice's spot; in a DM the bearing may come too


def test_node_by_name_with_battery_and_distance(daemon: Daemon, radio: FakeRadio) -> None:
    radio.hear(NodeReport(ALICE, heard=Heard(time.time()), position=ZURICH))
    text = reply(daemon, radio, dm("!node brvo"))
    assert text.startswith("BRVO (Bravo Base) !0b5a0042, heard 2m ago, 2 hops, SNR 6.5dB, battery 87% 3.98V")
    assert text.endswith("19 km NE from you")
    radio.hear(NodeReport(BRAVO, environment=EnvironmentMetrics(temperature=21.54, at=time.time())))
    assert "battery 87% 3.98V, 21.5°C, 19 km NE" in reply(daemon, radio, dm("!node BRVO", packet_id=76))
    on_channel = reply(daemon, radio, broadcast("!ai !node Bravo Base", packet_id=77, channel=1))
    assert on_channel.endswith("19 km from you")  # no bearing on a channel: nobody can place BRVO from it


def test_node_missing_data_is_said_plainly(daemon: Daemon, radio: FakeRadio) -> None:
    assert reply(daemon, radio, dm("!node BOB")).endswith(
        "battery ? (not reported), no position from you yet: share it in the app"
    )
    assert reply(daemon, radio, dm("!node ZZZZ", packet_id=5)) == "No node called ZZZZ heard."
    assert reply(daemon, radio, dm("!node", packet_id=6)).startswith("Say which node")


def test_mesh_gives_the_bot_nodes_load_and_battery(daemon: Daemon, radio: FakeRadio) -> None:
    assert reply(daemon, radio, dm("!mesh")) == (
        "Mesh: channel util 14.2%, air tx 2.5%; active 1 in 1h, 2 in 24h; bot battery 95% 4.10V"
    )


def test_location_commands_off(make_daemon, radio: FakeRadio) -> None:
    daemon = make_daemon(**{"mesh_directory.location_commands": False})
    hear_the_mesh(radio)
    radio.hear(NodeReport(ALICE, heard=Heard(time.time()), position=ZURICH))
    assert reply(daemon, radio, dm("!where")) == "Location commands are off on this bot."
    assert "km" not in reply(daemon, radio, dm("!node BRVO", packet_id=9))
    assert "!where" not in reply(daemon, radio, dm("!help", packet_id=10))


def test_commands_do_not_spend_the_question_allowance(make_daemon, radio: FakeRadio, model: FakeModel) -> None:
    daemon = make_daemon(**{"limits.per_node_burst": 1, "limits.per_node_per_hour": 0})
    hear_the_mesh(radio)
    for i, word in enumerate(("!nodes", "!mesh", "!node BRVO")):
        reply(daemon, radio, dm(word, packet_id=20 + i))
    model.answers.append("Fine.")
    assert reply(daemon, radio, dm("What is a mesh?", packet_id=30)) == "Fine."


def test_a_mesh_question_gets_the_facts_it_needs_and_src_names_the_directory(daemon, radio, model) -> None:
    model.answers.append("BRVO is at 87%.")
    assert reply(daemon, radio, dm("What is BRVO's battery?")) == "BRVO is at 87%."
    system, user = model.requests[0].turns[0].content, model.requests[0].turns[-1].content
    assert "only from the mesh facts" in system
    assert "BRVO (Bravo Base): last heard 2m ago, battery 87% 3.98V." in user
    assert "SNR" not in user and "km" not in user  # only what the question needs
    assert user.endswith("\n\nWhat is BRVO's battery?")  # the facts, then the question, no label to echo
    assert reply(daemon, radio, dm("!src", packet_id=2)).startswith("Source: node directory")
    model.answers.append("Paris.")
    reply(daemon, radio, dm("What is the capital of France?", packet_id=3))
    assert "Mesh facts" not in model.requests[1].turns[-1].content
    assert "only from the mesh facts" not in model.requests[1].turns[0].content
    assert not reply(daemon, radio, dm("!src", packet_id=4)).startswith("Source: node directory")


def test_a_channel_question_never_gets_a_nodes_position_or_bearing(daemon, radio, model) -> None:
    radio.hear(NodeReport(ALICE, heard=Heard(time.time()), position=ZURICH))
    model.answers.append("About 19 km.")
    reply(daemon, radio, broadcast("!ai how far is BRVO?", packet_id=40, channel=1))
    user = model.requests[0].turns[-1].content
    assert "19 km from the asker" in user and " NE " not in user and "47." not in user
