"""The emergency lane's rules around the daemon (fake radio, virtual clock): who counts, re-alerts, the channel."""

from __future__ import annotations

import logging

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core import limits
from meshbot.core.clock import VirtualClock
from meshbot.core.config import load_config
from meshbot.core.policy import Accept, Kind
from meshbot.storage.store import Store
from tests.conftest import wait_until
from tests.fakes import AI_TAG, ALICE, BOB, FakeModel, FakeRadio, broadcast, dm

HELPER = 0x0CAFE001


def make_cfg(**overrides):
    return load_config(
        # The shipped reference is off: these tests read the prompts' questions, not the notes they find.
        overrides={
            "join.window_s": 0,
            "answers.reference": False,
            "emergency.notify_nodes": [f"!{HELPER:08x}"],
            **overrides,
        },
        environ={},
    )


def alerts(radio: FakeRadio) -> list[str]:
    return [s.message.text.removeprefix(AI_TAG) for s in radio.sent if s.message.dest == HELPER]


def emergencies(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.packet_id for r in caplog.records if getattr(r, "event", None) == "emergency"]


def test_other_bots_denied_nodes_and_commands_are_not_emergencies(
    make_daemon, radio: FakeRadio, model: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    daemon = make_daemon(make_cfg(**{"limits.deny": [f"!{BOB:08x}"], "commands.help": ["!help", "help me"]}))
    radio.receive(dm(AI_TAG + "SOS is a distress signal in Morse code.", packet_id=1))  # another bot's answer
    radio.receive(dm("SOS", sender=BOB, packet_id=2))
    radio.receive(dm("help me", packet_id=3))  # the operator made it a command word: a command it stays
    radio.receive(dm("sos", packet_id=4))
    wait_until(lambda: daemon.idle() and len(model.requests) == 1)
    assert emergencies(caplog) == [4]
    assert len([a for a in alerts(radio) if a.startswith("EMERGENCY")]) == 1


def test_with_proof_required_only_a_pki_dm_counts(
    make_daemon, radio: FakeRadio, model: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    daemon = make_daemon(
        make_cfg(**{"emergency.require_proof": True, "policy.channels": [{"index": 0, "public": True}]})
    )
    radio.receive(dm("mayday", packet_id=1, pki=False))
    radio.receive(broadcast("mayday", packet_id=2))
    radio.receive(dm("mayday", packet_id=3, pki=True))
    wait_until(lambda: daemon.idle() and len(emergencies(caplog)) == 1)
    assert emergencies(caplog) == [3]


def test_further_emergencies_within_two_minutes_alert_at_most_once_a_minute_and_lose_no_text(
    make_daemon, radio: FakeRadio, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    daemon = make_daemon(make_cfg())
    radio.receive(dm("SOS fell", packet_id=1))
    wait_until(lambda: daemon.idle() and len(alerts(radio)) == 1)
    clock.advance(20)
    radio.receive(dm("SOS at the bridge", packet_id=2))
    radio.receive(dm("SOS two hurt", packet_id=3))
    wait_until(lambda: daemon.idle() and len(emergencies(caplog)) == 3)
    assert len(alerts(radio)) == 1  # held: the minute is not over
    assert sum(1 for s in radio.sent if s.message.reply_id in (1, 2, 3) and "Emergency heard" in s.message.text) == 3
    clock.advance(45)
    wait_until(lambda: len(alerts(radio)) == 2)
    assert alerts(radio)[1].endswith('"SOS at the bridge" | "SOS two hurt"')
    radio.receive(dm("SOS fell", packet_id=1))  # the same packet again: a duplicate, nothing more
    wait_until(daemon.idle)
    assert emergencies(caplog) == [1, 2, 3] and len(alerts(radio)) == 2


def test_an_alert_goes_to_the_notify_channel_and_a_channel_emergency_is_answered_there(
    make_daemon, radio: FakeRadio, model: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    model.queue("Stay calm.")
    daemon = make_daemon(make_cfg(**{"emergency.notify_channel": 2, "emergency.notify_nodes": []}))
    radio.receive(broadcast("救命 我在山上", channel=5, packet_id=7))  # a channel the bot does not answer on
    wait_until(lambda: daemon.idle() and len(model.requests) == 1)
    on_air = [(s.message.dest, s.message.channel, s.message.reply_id, s.message.text) for s in radio.sent]
    assert on_air[0][:3] == (limits.BROADCAST_NUM, 5, 7) and "Emergency heard" in on_air[0][3]
    assert [o[1] for o in on_air if "EMERGENCY" in o[3]] == [2]
    assert on_air[-1][:3] == (limits.BROADCAST_NUM, 5, 7) and on_air[-1][3].endswith("Stay calm.")


def test_a_follow_up_without_a_word_reaches_the_helpers_and_the_model_until_the_episode_ends(
    make_daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    daemon = make_daemon(make_cfg(**{"emergency.follow_up_s": 600}))
    radio.receive(dm("SOS my friend fell", packet_id=1))
    wait_until(lambda: daemon.idle() and len(alerts(radio)) == 1)
    clock.advance(90)
    radio.receive(dm("we are at the old bridge, two hurt", packet_id=2))
    radio.receive(dm("!ping", packet_id=3))  # a command stays a command
    radio.receive(broadcast("anyone near the bridge?", packet_id=4))  # another place: not a follow-up
    wait_until(lambda: daemon.idle() and len(alerts(radio)) == 2)
    assert alerts(radio)[1].endswith('"we are at the old bridge, two hurt"')
    assert "Emergency heard" not in " ".join(s.message.text for s in radio.sent if s.message.reply_id == 2)
    assert [r.word for r in caplog.records if getattr(r, "event", None) == "emergency"] == ["sos", "(follow-up)"]
    clock.advance(601)
    radio.receive(dm("thanks, they are safe now", packet_id=5))
    wait_until(lambda: daemon.idle() and len(model.requests) == 3)
    assert len(alerts(radio)) == 2  # the episode is over: an ordinary question again


def test_an_emergency_left_unanswered_at_a_restart_goes_first_again(
    radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    store = Store(":memory:")
    question, sos = dm("what is lora?", sender=BOB, packet_id=1), dm("SOS we are lost", packet_id=2)
    for msg in (question, sos):  # what a previous run accepted and never answered, the question first
        store.add_query(msg, Accept(Kind.ASK, msg.text or "", msg.sender, 0, True), seed=1)
    model.queue("Stay put.", "A radio.")
    daemon = build_daemon(make_cfg(), radio=radio, model=model, clock=clock, store=store)
    daemon.start()
    try:
        wait_until(lambda: len(model.requests) == 2 and daemon.idle())
    finally:
        daemon.stop(grace_s=1.0)
    assert [r.turns[-1].content for r in model.requests] == ["SOS we are lost", "what is lora?"]
