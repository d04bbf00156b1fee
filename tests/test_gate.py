"""The gate: who is refused as another bot, and that people who number their own questions are not."""

from __future__ import annotations

import logging

import pytest

from meshbot.core.config import LimitsConfig
from meshbot.core.events import Reason
from meshbot.core.fragmenter import fragment
from meshbot.core.gate import Admin, Gate, Refused
from meshbot.core.policy import Accept, Kind
from tests.conftest import wait_until
from tests.fakes import ALICE, BOB, FakeModel, FakeRadio, dm

LONG = ("LoRa trades speed for range: a slow chirp is heard far below the noise floor. " * 8).strip()


def never_seen(node: int, text: str, window_s: float) -> bool:
    return False


def verdict(gate: Gate, text: str, sender: int = ALICE) -> Refused | None:
    result = gate.check(dm(text, sender=sender), Accept(Kind.ASK, text, sender, 0, True), now=0.0)
    assert not isinstance(result, Admin)  # never an admin command here
    return result


@pytest.mark.parametrize(
    "question",
    ["1/2 what is lora and", "2/2 …and why does it reach so far?", "(1/2) how do I", "[2/2] set the region?"],
)
def test_a_person_numbering_their_own_question_is_answered(question: str) -> None:
    assert verdict(Gate(LimitsConfig(), never_seen), question) is None


def test_a_persons_long_continued_part_is_not_taken_for_a_bot() -> None:
    """`1/+` is a marker people use too; only the tag or the "more" invitation marks a meshbot."""
    untagged = fragment(LONG, 200, 3).fragments[0].text  # "1/+ ..." near the budget, no tag
    assert untagged.startswith("1/+ ")
    assert verdict(Gate(LimitsConfig(), never_seen), untagged) is None


def test_another_meshbots_fragments_and_listed_bots_are_refused() -> None:
    gate = Gate(LimitsConfig(bots=(f"!{BOB:08x}",)), never_seen, bot_tags=("🤖",))
    first, *_, last = fragment(LONG, 200, 3, tag="🤖 ").fragments
    assert verdict(gate, first.text) == Refused(Reason.OTHER_BOT)
    untagged_last = fragment(LONG, 200, 3).fragments[-1]
    assert untagged_last.capped and verdict(gate, untagged_last.text) == Refused(Reason.OTHER_BOT)
    assert last.capped and verdict(gate, last.text) == Refused(Reason.OTHER_BOT)
    assert verdict(gate, "🤖 LoRa is a radio.") == Refused(Reason.OTHER_BOT)
    assert verdict(gate, "what is lora?", sender=BOB) == Refused(Reason.OTHER_BOT)
    assert verdict(gate, "what is lora?") is None


def test_a_dm_numbered_2_of_2_gets_an_answer(
    make_daemon, radio: FakeRadio, model: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    model.queue("Because it chirps slowly.", "A slow chirp is heard far away.")
    daemon = make_daemon()
    radio.receive(dm("2/2 …and why does it reach so far?", packet_id=1))
    radio.receive(dm(fragment(LONG, 200, 3, tag="🤖 ").fragments[0].text, sender=BOB, packet_id=2))  # a bot's
    wait_until(lambda: len(radio.sent) >= 1 and daemon.idle())
    assert radio.texts() == ["Because it chirps slowly."]
    assert [r.reason for r in caplog.records if getattr(r, "event", None) == "ignored"] == [Reason.OTHER_BOT]
