"""Delivery edge cases with the fake radio: one packet id per text, holding an answer a node cannot take, reconnects."""

from __future__ import annotations

import logging

import pytest

from meshbot.core.airtime import preset
from meshbot.core.clock import VirtualClock
from meshbot.core.config import MeshConfig
from meshbot.core.domain import AckStatus, Outbound, RadioEvent, SendResult
from meshbot.core.fragmenter import strip_numbering
from meshbot.core.pacing import Pacer
from meshbot.radios.mqtt import codec
from meshbot.radios.mqtt.transport import MqttRadio
from meshbot.service.holdback import Holdback
from meshbot.service.sender import Sender, SendJob
from meshbot.storage.store import Store
from tests.conftest import wait_until
from tests.fakes import ALICE, FakeModel, FakeRadio, dm
from tests.mqtt_support import mqtt_config

LONG_ANSWER = " ".join(f"Sentence number {n} tells you about LoRa radios." for n in range(1, 30))


class Remainders:
    """The store's "more" table, as the holdback sees it."""

    def __init__(self) -> None:
        self.kept: dict[int, tuple[str, int]] = {}

    def put_remainder(self, node: int, text: str, next_index: int) -> None:
        self.kept[node] = (text, next_index)


@pytest.fixture
def remainders() -> Remainders:
    return Remainders()


@pytest.fixture
def sender(radio: FakeRadio, clock: VirtualClock, remainders: Remainders) -> Sender:
    cfg = MeshConfig(min_gap_s=2.0, ack_timeout_s=30.0, max_retries=2)
    pacer = Pacer(preset("SHORT_FAST"), cfg.min_gap_s, 1800.0)
    return Sender(radio, pacer, clock, cfg, holdback=Holdback(remainders, tag=""))


def fragment_job(text: str, index: int, query_id: int = 7) -> SendJob:
    out = Outbound(text, ALICE, 0, want_ack=True, reply_id=99)
    return SendJob(out, f"q{query_id} #{index}", query_id, index, asker=ALICE)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def test_a_fragment_that_timed_out_goes_again_under_its_packet_id(sender: Sender, radio: FakeRadio) -> None:
    radio.outcomes.extend([(AckStatus.TIMEOUT, ""), (AckStatus.TIMEOUT, "")])
    assert sender.send_now(fragment_job("1/+ hello", 1)).status is AckStatus.ACKED
    ids = [s.packet_id for s in radio.sent]
    assert len(ids) == 3 and len(set(ids)) == 1  # a handset that has it drops the copies


def test_a_copy_refused_before_the_air_goes_under_a_new_id(sender: Sender, radio: FakeRadio) -> None:
    # The node records a refused id too (PhoneAPI checks repeats first): the same id again would be ignored.
    radio.outcomes.append((AckStatus.NAKED, "RATE_LIMIT_EXCEEDED"))
    assert sender.send_now(fragment_job("1/+ hello", 1)).status is AckStatus.ACKED
    first, second = radio.sent
    assert first.packet_id != second.packet_id and second.message.packet_id is None


def test_a_fragment_the_node_gave_up_on_is_not_sent_again(
    sender: Sender, radio: FakeRadio, caplog: pytest.LogCaptureFixture
) -> None:
    # The node sent it three times under one id already; more copies cost air time or show twice.
    caplog.set_level("INFO")
    radio.outcomes.append((AckStatus.NAKED, "MAX_RETRANSMIT"))
    assert sender.send_now(fragment_job("1/+ hello", 1)).reason == "MAX_RETRANSMIT"
    assert len(radio.sent) == 1
    (line,) = events(caplog, "unreachable")
    assert line.reason == "MAX_RETRANSMIT" and "!0a11ce00 unreachable" in line.getMessage()


def test_after_an_undeliverable_first_fragment_the_rest_is_held_for_more(
    sender: Sender, radio: FakeRadio, remainders: Remainders
) -> None:
    radio.outcomes.append((AckStatus.NAKED, "MAX_RETRANSMIT"))
    sender.start()
    for index, body in enumerate(["Alpha one.", "Beta two.", "Gamma three."], start=1):
        sender.submit(fragment_job(f"{index}/+ {body}", index))
    sender.stop(drain_s=5.0)
    assert radio.texts() == ["1/+ Alpha one."]  # nothing after it went on air
    assert remainders.kept[ALICE] == ("Alpha one. Beta two. Gamma three.", 1)


def test_a_later_fragment_that_fails_ends_the_answer_the_same_way(
    sender: Sender, radio: FakeRadio, remainders: Remainders
) -> None:
    radio.outcomes.extend([(AckStatus.ACKED, "NONE"), (AckStatus.NAKED, "MAX_RETRANSMIT")])
    sender.start()
    for index, body in enumerate(["Alpha one.", "Beta two.", "Gamma three."], start=1):
        sender.submit(fragment_job(f"{index}/+ {body}", index))
    sender.stop(drain_s=5.0)
    assert radio.texts() == ["1/+ Alpha one.", "2/+ Beta two."]
    assert remainders.kept[ALICE] == ("Beta two. Gamma three.", 2)


def test_a_reconnect_during_the_ack_wait_sends_again_at_once_under_the_same_id(
    sender: Sender, radio: FakeRadio, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    radio.outcomes.append((AckStatus.TIMEOUT, ""))

    def link_comes_back(record) -> None:
        if len(radio.sent) == 1:
            clock.advance(5.0)  # the link drops and is rebuilt a few seconds after the send
            sender.on_radio_event(RadioEvent.CONNECTED)

    radio.on_send = link_comes_back
    assert sender.send_now(fragment_job("1/+ hello", 1)).status is AckStatus.ACKED
    first, second = radio.sent
    assert second.packet_id == first.packet_id
    assert second.at - first.at < 10.0  # not after ack_timeout_s (30 s here)
    assert len(events(caplog, "resent-after-reconnect")) == 1


def test_a_verdict_the_node_held_over_a_reconnect_ends_the_wait_without_a_copy(
    sender: Sender, radio: FakeRadio, clock: VirtualClock
) -> None:
    radio.outcomes.append((AckStatus.TIMEOUT, ""))

    def link_comes_back(record) -> None:
        sender.on_radio_event(RadioEvent.CONNECTED)
        packet_id, callback = radio.unanswered[0]  # the ACK the node kept while the link was away
        callback(SendResult(packet_id, AckStatus.ACKED))

    radio.on_send = link_comes_back
    assert sender.send_now(fragment_job("1/+ hello", 1)).status is AckStatus.ACKED
    assert len(radio.sent) == 1


def test_an_unreachable_asker_gets_the_held_answer_with_more(
    make_daemon, radio: FakeRadio, model: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    model.queue(LONG_ANSWER)
    daemon = make_daemon()
    radio.outcomes.append((AckStatus.NAKED, "MAX_RETRANSMIT"))
    radio.receive(dm("tell me about lora", packet_id=1))
    wait_until(daemon.idle)
    first = radio.texts()
    assert len(first) == 1 and first[0].startswith("1/+")
    assert len(events(caplog, "unreachable")) == 1
    radio.receive(dm("more", packet_id=2))  # back in range
    wait_until(daemon.idle)
    again = radio.texts()[1:]
    assert again[0].startswith("1/+")  # the answer starts where the asker lost it, not at 2/+
    assert strip_numbering(again[0]) == strip_numbering(first[0])
    words = " ".join(strip_numbering(t) for t in again).split()
    assert len(again) == 3 and words == LONG_ANSWER.split()[: len(words)]


def test_the_mqtt_transport_publishes_a_copy_under_the_id_it_is_given(clock: VirtualClock) -> None:
    radio = MqttRadio(mqtt_config(1), Store(":memory:"), clock)  # never connected: paho keeps QoS 1 publishes
    data = codec.text_data("1/+ hello", None, False)
    fresh = radio.publish_data(codec.BROADCAST, data)
    assert radio.publish_data(codec.BROADCAST, data, packet_id=fresh) == fresh
    assert radio.publish_data(codec.BROADCAST, data) != fresh
