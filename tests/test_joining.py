"""Multi-part questions: one node's messages joined into one question, on virtual time (core/joiner.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.clock import VirtualClock
from meshbot.core.config import JoinConfig, load_config
from meshbot.core.joiner import Shape, judge
from meshbot.storage.store import QueryState, Store
from tests.conftest import wait_until
from tests.fakes import AI_TAG, ALICE, BOB, FakeModel, FakeRadio, broadcast, dm

# The shipped reference is off: these tests read the joined question in the prompt, not the notes it finds.
JOIN = {"join.window_s": 8, "join.part_wait_s": 90, "answers.reference": False}
CUT_OFF = (
    "We are three people hiking in the hills for a week with handheld radios and one solar relay, and I "
    "wonder where on the ridge we should put that relay so the two valleys on either side of"
)


def settled(daemon) -> None:
    """Wait until the intake thread has taken every packet delivered so far (before moving the clock)."""
    wait_until(lambda: daemon.inbox.items.unfinished_tasks == 0)


def asked(model: FakeModel) -> list[str]:
    """The user question of each generation the model was asked for (after any facts block that precedes it)."""
    return [request.turns[-1].content.split("\n\n")[-1] for request in model.requests]


@pytest.mark.parametrize(
    ("text", "shape", "body"),
    [
        ("1/3 how do I", Shape.MORE, "how do I"),
        ("(1/2) how do I", Shape.MORE, "how do I"),
        ("[2/2] boil an egg?", Shape.LAST, "boil an egg?"),
        ("1/+ first part", Shape.MORE, "first part"),
        ("and the rest (2/2)", Shape.LAST, "and the rest"),
        ("What is LoRa?", Shape.COMPLETE, "What is LoRa?"),
        ("hello", Shape.OPEN, "hello"),
        ("1/2 cup of flour is how many grams?", Shape.MORE, "cup of flour is how many grams?"),
        ("3/2 is not a marker", Shape.OPEN, "3/2 is not a marker"),
        (CUT_OFF, Shape.MORE, CUT_OFF),
        (CUT_OFF + ".", Shape.OPEN, CUT_OFF + "."),  # ends a sentence, but not well under the cap
    ],
)
def test_the_rule_reads_markers_cut_offs_and_complete_questions(text: str, shape: Shape, body: str) -> None:
    part = judge(text, JoinConfig())
    assert (part.shape, part.text) == (shape, body)


def test_a_complete_short_question_is_not_held_for_the_window(
    make_daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("LoRa is a long range radio.")
    daemon = make_daemon(**JOIN)
    radio.receive(dm("What is LoRa?", packet_id=7))
    wait_until(lambda: len(radio.sent) == 1)
    assert clock.now() - 1000.0 < 8  # answered before a single join window could have passed
    assert asked(model) == ["What is LoRa?"] and radio.sent[0].message.reply_id == 7
    wait_until(daemon.idle)


def test_marked_parts_are_one_question_replying_to_the_last_part(
    make_daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    model.queue("Put the egg in boiling water for eight minutes.")
    daemon = make_daemon(**JOIN)
    radio.receive(dm("1/2 how long should I boil", packet_id=1))
    time.sleep(0.2)
    assert model.requests == [] and radio.sent == []  # part 1 is not answered while parts arrive
    radio.receive(dm("2/2 an egg for a soft yolk?", packet_id=2))
    wait_until(lambda: daemon.idle() and len(radio.sent) == 1)
    assert asked(model) == ["how long should I boil an egg for a soft yolk?"]
    assert [s.message.reply_id for s in radio.sent] == [2]
    joined = [r for r in caplog.records if getattr(r, "event", "") == "joined"]
    assert len(joined) == 1 and joined[0].parts == 2


def test_unmarked_messages_inside_the_window_are_joined(
    make_daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("Both.")
    daemon = make_daemon(**JOIN)
    radio.receive(dm("tell me about lora", packet_id=1))
    settled(daemon)
    clock.advance(5)
    radio.receive(dm("and meshtastic", packet_id=2))
    settled(daemon)
    clock.advance(5)  # 10 s after the first, 5 after the second: still inside the window
    time.sleep(0.3)
    assert model.requests == []
    clock.advance(4)
    wait_until(lambda: daemon.idle() and len(radio.sent) == 1)
    assert asked(model) == ["tell me about lora and meshtastic"]


def test_a_cut_off_message_waits_for_the_rest(
    make_daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("On the ridge top.")
    daemon = make_daemon(**JOIN)
    radio.receive(dm(CUT_OFF, packet_id=1))
    settled(daemon)
    clock.advance(30)  # past the short window: a cut-off part waits longer
    time.sleep(0.3)
    assert model.requests == []
    radio.receive(dm("the ridge can both reach it?", packet_id=2))
    wait_until(lambda: daemon.idle() and len(radio.sent) == 1)
    assert asked(model) == [f"{CUT_OFF} the ridge can both reach it?"]


def test_parts_of_different_nodes_are_never_mixed(
    make_daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("A.", "B.")
    daemon = make_daemon(**JOIN)
    radio.receive(dm("1/2 alice asks about", packet_id=1))
    radio.receive(dm("1/2 bob asks about", sender=BOB, packet_id=2))
    radio.receive(dm("2/2 antennas?", packet_id=3))
    radio.receive(dm("2/2 batteries?", sender=BOB, packet_id=4))
    wait_until(lambda: daemon.idle() and len(radio.sent) == 2)
    assert sorted(asked(model)) == ["alice asks about antennas?", "bob asks about batteries?"]


def test_a_humans_numbered_part_is_a_part_and_a_tagged_text_is_a_bot(
    make_daemon, radio: FakeRadio, model: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    model.queue("Yes.")
    daemon = make_daemon(**JOIN)
    radio.receive(dm("🤖 2/+ I am another bot's fragment", sender=BOB, packet_id=1))
    radio.receive(dm("2/2 is this my last part?", packet_id=2))
    wait_until(lambda: daemon.idle() and len(radio.sent) == 1)
    assert asked(model) == ["is this my last part?"]
    assert [r.reason for r in caplog.records if getattr(r, "event", "") == "ignored"] == ["other-bot"]


def test_a_channel_part_needs_no_second_trigger(
    make_daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("Use a mast.")
    channels = [{"index": 1, "reply": "channel"}]
    daemon = make_daemon(**JOIN, **{"policy.channels": channels})
    radio.receive(broadcast("!ai 1/2 how do I get my relay", channel=1, packet_id=1))
    radio.receive(broadcast("over the trees (2/2)", channel=1, packet_id=2))
    wait_until(lambda: daemon.idle() and len(radio.sent) == 1)
    assert asked(model) == ["how do I get my relay over the trees"]
    assert radio.sent[0].message.channel == 1 and radio.sent[0].message.reply_id == 2


def test_a_waiting_part_survives_a_restart(tmp_path: Path, clock: VirtualClock) -> None:
    cfg = load_config(overrides={**JOIN, "store.path": str(tmp_path / "bot.db")}, environ={})
    radio, model = FakeRadio(clock), FakeModel(clock)
    first = build_daemon(cfg, radio=radio, model=model, clock=clock)
    first.start()
    first.admit(dm("1/2 what antenna should I", packet_id=1))
    first.stop(grace_s=1)
    assert Store(tmp_path / "bot.db").joining()[0].question == "what antenna should I"

    model.queue("A vertical one.")
    second = build_daemon(cfg, radio=radio, model=model, clock=clock)
    second.start()
    try:
        second.admit(dm("2/2 use on my roof?", packet_id=2))
        wait_until(lambda: second.idle() and len(radio.sent) == 1)
        assert asked(model) == ["what antenna should I use on my roof?"]
        assert radio.sent[0].message.text == AI_TAG + "A vertical one."
        assert second.store.get(1).state is QueryState.JOINED
    finally:
        second.stop(grace_s=1)


def test_a_lone_part_is_answered_when_the_rest_never_comes(
    make_daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("Here is what I know.")
    daemon = make_daemon(**JOIN)
    radio.receive(dm("1/3 my question starts here", packet_id=1))
    settled(daemon)
    clock.advance(91)
    wait_until(lambda: daemon.idle() and len(radio.sent) == 1)
    assert asked(model) == ["my question starts here"] and radio.sent[0].message.reply_id == 1
    assert radio.sent[0].message.dest == ALICE
