"""The emergency lane on a live virtual node (the real meshtastic TCPInterface): an SOS gets through everything."""

from __future__ import annotations

import logging
import time

import pytest

from meshbot.core import limits
from meshbot.sim.rules.telemetry import device_metrics_packet, position_packet
from tests.conftest import wait_until
from tests.fakes import AI_TAG, BOT_NUM
from tests.faults_support import PEER_NUMS, Bench, events
from tests.faults_support import bench as bench  # a fixture: the alias marks the import as used

ADMIN, USER, HELPER, OTHER = PEER_NUMS[0], PEER_NUMS[1], PEER_NUMS[2], PEER_NUMS[3]
REPLY = "Emergency heard: alerting help. Send where you are, what happened, how many are hurt."
# The bot sits in Berlin; USER is about 1.1 km north-east of it.
BOT_AT, USER_AT = (52.52000, 13.40500), (52.52700, 13.41500)


@pytest.fixture
def sos_bench(bench) -> Bench:
    b = bench(
        **{
            "limits.admins": [f"!{ADMIN:08x}"],
            "limits.per_node_burst": 1,  # USER's second question is over the rate
            "limits.per_node_per_hour": 1,
            "emergency.notify_nodes": [f"!{HELPER:08x}"],
            "power.interval_s": 2.0,  # simulated seconds: the bench's clock runs 20x
            "radio.no_nodes": False,  # the node DB with the peers' names, as a bot with a full node DB has it
        }
    )
    b.start_daemon()
    wait_until(lambda: b.settled(b.daemons[0]), timeout=20)
    return b


def texts_to(b: Bench, dest: int, channel: int | None = None) -> list[str]:
    """What the bot sent `dest` (on `channel`), its AI tag removed."""
    return [
        (p.text or "").removeprefix(AI_TAG)
        for p in b.node.sent
        if p.to == dest and (channel is None or p.channel == channel)
    ]


def replies_to(b: Bench, dest: int, packet_id: int) -> list[str]:
    return [(p.text or "").removeprefix(AI_TAG) for p in b.node.sent if p.to == dest and p.reply_id == packet_id]


def locate(b: Bench, node: int, at: tuple[float, float], age_s: int, packet_id: int) -> None:
    now = int(time.time())
    b.node.inject_packet(position_packet(node, packet_id, *at, fix_time=now - age_s))


def test_an_sos_while_paused_and_rate_limited_gets_the_reply_the_alert_with_position_and_an_answer(
    sos_bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b, daemon = sos_bench, sos_bench.daemons[0]
    locate(b, BOT_NUM, BOT_AT, 3600, 900)
    locate(b, USER, USER_AT, 300, 901)
    b.model.queue("Keep them still and warm; press on any bleeding.")
    b.ask(ADMIN, 1, "!pause")
    wait_until(lambda: daemon.paused.is_set(), timeout=20)
    b.ask(USER, 2, "what is the weather like")  # spends USER's one question; held by the pause
    b.ask(USER, 3, "and tomorrow?")  # over the rate: refused with a notice
    wait_until(lambda: len(events(caplog, "ignored", "node-rate")) == 1, timeout=20)
    b.ask(USER, 4, "SOS my friend fell off the ridge, leg broken")
    wait_until(lambda: REPLY in replies_to(b, USER, 4), timeout=20)
    wait_until(lambda: any("SOS my friend fell" in t for t in texts_to(b, HELPER)), timeout=20)
    wait_until(lambda: "Keep them still" in " ".join(replies_to(b, USER, 4)), timeout=20)
    assert daemon.paused.is_set()
    assert replies_to(b, USER, 2) == []  # the ordinary question still waits for !resume
    alert = " ".join(texts_to(b, HELPER))
    assert f"!{USER:08x}" in alert and "P1" in alert  # who: the id and the name the node DB has
    assert "52.52700,13.41500" in alert and "(5min old)" in alert  # where, and how old that fix is
    assert "1.0 km NE of the bot" in alert  # distance and bearing from the bot's own node
    assert "0 hops" in alert and "SNR 6.0" in alert
    assert all(p.want_ack and p.outcome == "ACK" for p in b.node.sent if p.to == HELPER)
    [heard] = events(caplog, "emergency")
    assert heard.levelno == logging.WARNING


def test_on_the_public_channel_without_trigger_an_emergency_is_answered_there_and_a_false_friend_is_not(
    sos_bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b = sos_bench
    b.model.queue("Call for a helicopter if you can.")
    for pid, text in ((10, "Mamma mia SOSA is playing tonight"), (11, "that was helpful, thanks")):
        b.node.inject_text(OTHER, text, to=limits.BROADCAST_NUM, packet_id=pid)
    b.ask(OTHER, 12, "!help")
    wait_until(lambda: any(t.startswith("I am meshbot") for t in texts_to(b, OTHER)), timeout=20)
    b.node.inject_text(OTHER, "Mayday, we are stuck on the glacier", to=limits.BROADCAST_NUM, packet_id=13)
    wait_until(lambda: "Call for a helicopter" in " ".join(replies_to(b, limits.BROADCAST_NUM, 13)), timeout=20)
    assert replies_to(b, limits.BROADCAST_NUM, 13)[0] == REPLY  # the reply first, then the answer
    assert [r.packet_id for r in events(caplog, "emergency")] == [13]
    assert sorted(r.reason for r in events(caplog, "ignored") if r.packet_id in (10, 11)) == [
        "public-channel",
        "public-channel",
    ]
    assert "position unknown" in " ".join(texts_to(b, HELPER))


def test_asleep_on_a_low_battery_an_sos_and_a_command_are_answered_and_a_question_gets_the_notice(
    sos_bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b, daemon = sos_bench, sos_bench.daemons[0]
    b.node.inject_packet(device_metrics_packet(BOT_NUM, 950, 9, 3.4, when=int(time.time())))
    wait_until(lambda: [r.mode for r in events(caplog, "power-mode")] == ["sleep"], timeout=20)
    b.model.queue("Stay where you are.")
    b.ask(USER, 20, "tell me a joke")
    b.ask(USER, 21, "!ping")
    b.ask(USER, 22, "Hilfe, ich bin verletzt")
    wait_until(lambda: "Stay where you are." in replies_to(b, USER, 22), timeout=20)
    wait_until(lambda: len(replies_to(b, USER, 21)) == 1, timeout=20)
    assert replies_to(b, USER, 20) == ["low power: emergencies only; ask again later"]
    assert replies_to(b, USER, 21)[0].startswith("pong")
    assert replies_to(b, USER, 22)[0] == REPLY
    assert any("EMERGENCY" in t for t in texts_to(b, HELPER))
    assert daemon.queue.depth() == 0 and [s.question for s in daemon.store.unfinished()] == []
    assert len(b.model.requests) == 1  # the joke was never put to the model
