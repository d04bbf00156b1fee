"""Faults on the TCP link to the node: dropped links under load, a reply racing a drop, redelivered packets."""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest
from meshtastic import publishingThread

from tests.conftest import wait_until
from tests.faults_support import LONG_ANSWER, PEER_NUMS, GatedModel, answered, audit, events, log_order_knowledge
from tests.faults_support import bench as bench  # a fixture: the alias marks the import as used


# -- the TCP link dropped 20 times under load ------------------------------------------------
@pytest.mark.slow
def test_twenty_dropped_links_under_load_lose_no_question_and_repeat_no_answer(
    bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    # ACKs take 0.1 s (2 s simulated), so the sender is often waiting on one when the link drops. The
    # queue may hold the whole load: this is about the link, not about refusing a busy node.
    b = bench(ack_delay_s=0.1, **{"queue.max_per_node": 60, "queue.max_depth": 64})
    b.model.queue(*[LONG_ANSWER[: 150 + 7 * k] for k in range(60)])  # 1 or 2 fragments each
    daemon = b.start_daemon()
    rng = random.Random(20)
    questions: list[tuple[int, int]] = []
    for k in range(20):
        before = b.node.handshakes
        wait_until(lambda: b.settled(daemon, before), timeout=20)
        for n in range(2):
            questions.append(b.ask(PEER_NUMS[(k + n) % 6], 1000 + 10 * k + n, f"question {k}.{n} before drop"))
        time.sleep(rng.uniform(0.5, 1.0))
        assert b.node.drop_client(reset=True)
        questions.append(b.ask(PEER_NUMS[(k + 3) % 6], 2000 + k, f"question {k} while down"))
        wait_until(lambda: b.node.handshakes > before, timeout=20)
    wait_until(answered(b, questions), timeout=90)
    wait_until(daemon.idle, timeout=20)
    sent = b.node.sent
    result = audit(sent, questions, b.cfg.mesh.max_fragments, log_order_knowledge(sent, caplog.records))
    print(
        f"20 drops: {len(result.complete)} questions answered, {result.resent_in_flight} fragment(s) resent "
        f"in flight, {len(result.duplicates)} duplicate(s), {b.node.handshakes} handshakes, {len(sent)} sends"
    )
    result.assert_clean()
    assert len(result.complete) == 60
    assert daemon.store.unfinished() == []
    assert b.node.handshakes >= 21


def test_a_reply_racing_a_dropped_link_waits_for_the_new_link_and_is_delivered(
    bench, caplog: pytest.LogCaptureFixture
) -> None:
    """The link drops; before the library's "connection lost" event is handled, a reply is sent.

    A slow handler on the library's one publishing thread (mesh-facts: "a slow handler stalls all
    radio events") holds that event back, so the race is not left to chance.
    """
    caplog.set_level(logging.INFO, logger="meshbot")
    b = bench()
    b.model = GatedModel()
    b.model.queue(LONG_ANSWER[:300])
    daemon = b.start_daemon()
    wait_until(lambda: b.settled(daemon), timeout=20)
    question = b.ask(PEER_NUMS[0], 4000, "a question answered across a drop")
    wait_until(lambda: len(events(caplog, "queued")) == 1, timeout=20)  # the model is now writing, slowly
    slow_handler = threading.Event()
    publishingThread.queueWork(lambda: slow_handler.wait(10))
    old_link = daemon.radio._iface  # the library's interface: its own connected flag
    assert b.node.drop_client(reset=True)
    wait_until(lambda: not old_link.isConnected.is_set(), timeout=5)  # the library saw the reset
    b.model.gate.set()  # the reply is ready, and goes to the sender, while the loss is still unreported
    time.sleep(1.0)
    slow_handler.set()
    # Reconnecting and sending take well under a second; the library's own wait on the dead link is 30 s.
    wait_until(answered(b, [question]), timeout=10)
    assert not events(caplog, "dropped")


# -- re-delivered packets: after a reconnect, and after a restart on the same store ---------
def test_redelivered_packets_get_no_second_answer_after_a_reconnect_or_a_restart(
    bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b = bench(ack_delay_s=0.1)
    b.model.queue(*[LONG_ANSWER[: 150 + 7 * k] for k in range(11)])
    daemon = b.start_daemon()
    wait_until(lambda: b.settled(daemon), timeout=20)
    texts = {(PEER_NUMS[k % 5], 3000 + k): f"redelivery question {k}" for k in range(10)}
    for (sender, packet_id), text in texts.items():
        b.ask(sender, packet_id, text)
    wait_until(lambda: len(b.node.sent) >= 3, timeout=20)  # drop while replies are still going out
    before = b.node.handshakes
    assert b.node.drop_client(reset=True)
    wait_until(lambda: b.node.handshakes > before and b.settled(daemon, before + 1), timeout=20)
    for (sender, packet_id), text in texts.items():  # the node hands the last 10 packets over again
        b.ask(sender, packet_id, text)
    wait_until(lambda: len(events(caplog, "ignored", "duplicate")) >= 10, timeout=20)
    wait_until(answered(b, texts), timeout=60)
    wait_until(daemon.idle, timeout=20)
    after_reconnect = len(b.node.sent)

    b.stop_daemon(daemon)
    daemon = b.start_daemon()  # same store file
    wait_until(lambda: b.settled(daemon), timeout=20)
    for (sender, packet_id), text in texts.items():
        b.ask(sender, packet_id, text)
    wait_until(lambda: len(events(caplog, "ignored", "duplicate")) >= 20, timeout=20)
    fresh = b.ask(PEER_NUMS[7], 3999, "a new question after the restart")
    wait_until(answered(b, [fresh]), timeout=30)  # the daemon does send: silence above was no accident
    wait_until(daemon.idle, timeout=20)

    sent = b.node.sent
    assert [p.reply_id for p in sent[after_reconnect:]] == [fresh[1]] * (len(sent) - after_reconnect)
    result = audit(sent, [*texts, fresh], b.cfg.mesh.max_fragments, log_order_knowledge(sent, caplog.records))
    result.assert_clean()
    assert len(events(caplog, "queued")) == 11
