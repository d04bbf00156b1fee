"""The one sender: pacing, waiting for ACKs, bounded retries."""

from __future__ import annotations

import pytest

from meshbot.core.airtime import preset
from meshbot.core.clock import VirtualClock
from meshbot.core.config import MeshConfig
from meshbot.core.domain import AckStatus, Outbound, SendResult
from meshbot.core.pacing import Pacer
from meshbot.service.sender import Sender, SendJob
from tests.fakes import ALICE, FakeRadio


@pytest.fixture
def sender(radio: FakeRadio, clock: VirtualClock) -> Sender:
    cfg = MeshConfig(min_gap_s=2.0, ack_timeout_s=30.0, max_retries=2)
    return Sender(radio, Pacer(preset("SHORT_FAST"), cfg.min_gap_s, 1800.0), clock, cfg)


def job(text: str, ack: bool = True) -> SendJob:
    return SendJob(Outbound(text, ALICE, 0, want_ack=ack), f"test {text}")


def test_texts_are_at_least_two_seconds_apart(sender: Sender, radio: FakeRadio) -> None:
    for n in range(4):
        sender.send_now(job(f"part {n}", ack=False))
    times = [s.at for s in radio.sent]
    assert all(b - a >= 2.0 for a, b in zip(times, times[1:], strict=False))


def test_a_dm_fragment_waits_for_the_previous_ack(sender: Sender, radio: FakeRadio, clock: VirtualClock) -> None:
    # The ACK of fragment 1 arrives 7 s after it is sent: fragment 2 must not leave before it.
    acks: dict[int, float] = {}

    def slow_ack(record) -> None:
        clock.advance(7.0)
        acks[record.packet_id] = clock.now()

    radio.on_send = slow_ack
    sender.send_now(job("1/+ first"))
    sender.send_now(job("2/2 second"))
    first, second = radio.sent
    assert second.at >= acks[first.packet_id]


def test_a_nak_for_rate_limit_is_retried_then_acked(sender: Sender, radio: FakeRadio) -> None:
    radio.outcomes.extend([(AckStatus.NAKED, "RATE_LIMIT_EXCEEDED")])
    result = sender.send_now(job("hello"))
    assert result.status is AckStatus.ACKED
    assert radio.texts() == ["hello", "hello"]
    assert radio.sent[1].at - radio.sent[0].at >= 2.0


def test_retries_are_bounded_and_too_large_is_not_retried(sender: Sender, radio: FakeRadio) -> None:
    radio.outcomes.extend([(AckStatus.TIMEOUT, "")] * 5)
    assert sender.send_now(job("lost")).status is AckStatus.TIMEOUT
    assert len(radio.sent) == 3  # 1 try + max_retries=2
    radio.outcomes.clear()
    radio.outcomes.append((AckStatus.NAKED, "TOO_LARGE"))
    assert sender.send_now(job("big")).reason == "TOO_LARGE"
    assert radio.texts().count("big") == 1


def test_a_radio_that_is_down_fails_the_send_without_crashing(sender: Sender, radio: FakeRadio) -> None:
    radio.up = False
    result = sender.send_now(job("nobody hears"))
    assert result.status is AckStatus.FAILED and radio.sent == []


def test_the_sender_thread_logs_each_fragment(
    sender: Sender, radio: FakeRadio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    sender.start()
    sender.submit(job("one"))
    sender.submit(job("two"))
    sender.stop(drain_s=5.0)
    assert radio.texts() == ["one", "two"]
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("fragment-sent") == 2 and events.count("fragment-acked") == 2


def test_a_late_ack_of_the_first_attempt_ends_the_retries(sender: Sender, radio: FakeRadio) -> None:
    radio.outcomes.extend([(AckStatus.TIMEOUT, "")] * 3)

    def late_ack(record) -> None:
        if len(radio.sent) == 2:  # while attempt 2 waits, attempt 1's ACK finally arrives
            first_id, callback = radio.unanswered[0]
            callback(SendResult(first_id, AckStatus.ACKED))

    radio.on_send = late_ack
    result = sender.send_now(job("slow mesh"))
    assert result.status is AckStatus.ACKED
    assert len(radio.sent) == 2  # no third copy


def test_a_text_over_the_air_time_budget_is_not_handed_to_the_radio(radio: FakeRadio, clock: VirtualClock) -> None:
    cfg = MeshConfig(min_gap_s=2.0)
    pacer = Pacer(preset("LONG_FAST"), 2.0, budget_s=3.0)  # room for one 200-byte text (1.9 s)
    sender = Sender(radio, pacer, clock, cfg)
    assert sender.send_now(job("x" * 200)).status is AckStatus.ACKED
    assert sender.send_now(job("y" * 200)).reason == "AIRTIME_BUDGET"
    assert radio.texts() == ["x" * 200]


def test_queued_texts_count_as_promised_air_time(sender: Sender) -> None:
    sender.submit(job("z" * 150))
    assert sender.queued_airtime() > 0


def test_a_dm_the_node_gave_up_on_counts_its_retries_against_the_hour(radio: FakeRadio, clock: VirtualClock) -> None:
    # EU_868 on LONG_FAST: 360 s for everything the node sends. A DM it gave up on went out three
    # times, and the region's account has to see all three, or the bot overruns and is NAKed.
    cfg = MeshConfig(min_gap_s=2.0, max_retries=0)
    pacer = Pacer(preset("LONG_FAST"), 2.0, budget_s=360.0, region_s=360.0)
    sender = Sender(radio, pacer, clock, cfg)
    radio.outcomes.append((AckStatus.NAKED, "MAX_RETRANSMIT"))
    before = pacer.budget_left(clock.now())
    sender.send_now(job("x" * 200))
    assert before - pacer.budget_left(clock.now()) > 3 * pacer.airtime_of("x" * 200, reply_id=True)
    radio.outcomes.append((AckStatus.NAKED, "RATE_LIMIT_EXCEEDED"))
    before = pacer.budget_left(clock.now())
    sender.send_now(job("y" * 200))  # refused before the air: only the attempt we made counts
    assert before - pacer.budget_left(clock.now()) == pytest.approx(pacer.airtime_of("y" * 200))
