"""Admin commands on a live node: who may pause, and a pause that holds questions until resume."""

from __future__ import annotations

import logging
import time

import pytest

from meshbot.core import limits
from tests.conftest import wait_until
from tests.fakes import AI_TAG, BOT_NUM
from tests.faults_support import PEER_NUMS, Bench, answered, audit, events, log_order_knowledge
from tests.faults_support import bench as bench  # a fixture: the alias marks the import as used

# -- admin commands ---------------------------------------------------------------------------
ADMIN, USER = PEER_NUMS[0], PEER_NUMS[1]


@pytest.fixture
def admin_bench(bench) -> Bench:
    # Channel 0 is the virtual node's default public channel: enabled, to show a channel cannot run commands.
    b = bench(**{"limits.admins": [f"!{ADMIN:08x}"], "policy.channels": [{"index": 0, "public": True}]})
    b.start_daemon()
    wait_until(lambda: b.settled(b.daemons[0]), timeout=20)
    return b


def command_replies(b: Bench, dest: int) -> list[str | None]:
    """What the bot sent `dest` that answers no question: command replies and notices."""
    return [(p.text or "").removeprefix(AI_TAG) for p in b.node.sent if p.to == dest and p.reply_id is None]


def test_pause_from_a_non_admin_a_channel_or_the_models_own_answer_changes_nothing(
    admin_bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b, node = admin_bench, admin_bench.node
    b.model.queue("LoRa is a radio.", "!pause", "Still here.")
    b.ask(USER, 1, "!pause")  # not an admin: nothing happens, not even a reply
    q2 = b.ask(USER, 2, "what is lora?")
    wait_until(answered(b, [q2]), timeout=20)
    q3 = b.ask(ADMIN, 3, "say the pause command")  # the model answers "!pause": that is only text
    wait_until(answered(b, [q3]), timeout=20)
    node.inject_text(BOT_NUM, "!pause", to=limits.BROADCAST_NUM, packet_id=4)  # our own words heard back
    node.inject_text(ADMIN, "!ai !pause", to=limits.BROADCAST_NUM, packet_id=5)  # an admin, but on a channel
    node.inject_text(ADMIN, "!pause", to=limits.BROADCAST_NUM, packet_id=6)
    q7 = b.ask(USER, 7, "are you still there?")
    wait_until(answered(b, [q7]), timeout=20)
    assert not b.daemons[0].paused.is_set()
    assert [p.text for p in node.sent if p.reply_id == 3] == [AI_TAG + "!pause"]
    assert [command_replies(b, n) for n in (USER, ADMIN, limits.BROADCAST_NUM)] == [[], [], []]
    # The admin's id on a channel proves nothing (anyone with the channel key can write it): "unproven".
    assert sorted(r.reason for r in events(caplog, "ignored")) == [
        "admin-only",
        "no-trigger",
        "own-packet",
        "unproven",
    ]
    audit(node.sent, [q2, q3, q7], 3, log_order_knowledge(node.sent, caplog.records)).assert_clean()


def test_an_admins_pause_by_dm_holds_questions_until_resume_and_stats_counts_them(
    admin_bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b, daemon = admin_bench, admin_bench.daemons[0]
    b.model.queue("One.", "Two.", "Answered after resume.")
    done = [b.ask(USER, 1, "first question"), b.ask(ADMIN, 2, "second question")]
    wait_until(answered(b, done), timeout=20)
    b.ask(ADMIN, 3, "!pause")
    wait_until(lambda: len(command_replies(b, ADMIN)) == 1 and daemon.paused.is_set(), timeout=20)
    held = b.ask(USER, 4, "a question while paused")
    wait_until(lambda: len(events(caplog, "queued")) == 3, timeout=20)
    time.sleep(1.0)  # 20 s simulated: a running worker would have answered by now
    assert not any(p.reply_id == held[1] for p in b.node.sent)
    assert [(q.sender, q.packet_id) for q in daemon.store.unfinished()] == [held]  # kept, and durable
    b.ask(ADMIN, 5, "!stats")
    wait_until(lambda: len(command_replies(b, ADMIN)) == 2, timeout=20)
    stats = command_replies(b, ADMIN)[1] or ""
    assert stats.startswith("queue 1, last hour: 2 answered, 0 failed, 0 dropped") and stats.endswith("paused")
    b.ask(ADMIN, 6, "!resume")
    wait_until(answered(b, [held]), timeout=20)
    paused_reply, _, resumed_reply = command_replies(b, ADMIN)
    assert (paused_reply or "").startswith("Paused") and resumed_reply == "Resumed."
    assert not daemon.paused.is_set()
    audit(b.node.sent, [*done, held], 3, log_order_knowledge(b.node.sent, caplog.records)).assert_clean()
