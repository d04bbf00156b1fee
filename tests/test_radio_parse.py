"""The radio boundary's packet parsing, ACK reading and ACK routing, on the library's dict format."""

from __future__ import annotations

import pytest

from meshbot.core.acks import AckRouter
from meshbot.core.domain import AckStatus, SendResult
from meshbot.radios.link import split_host
from meshbot.radios.packets import MalformedPacket, parse_packet, result_of

ME = 0x1234ABCD


def text_packet(**kw):
    packet = {
        "from": 0xA1,
        "to": ME,
        "id": 77,
        "rxSnr": 5.5,
        "rxRssi": -90,
        "hopStart": 3,
        "hopLimit": 1,
        "decoded": {"portnum": "TEXT_MESSAGE_APP", "payload": b"hi", "text": "hi"},
    }
    packet.update(kw)
    return packet


def test_a_dm_is_parsed_with_hops_and_signal() -> None:
    msg = parse_packet(text_packet(), ME)
    assert (msg.sender, msg.packet_id, msg.text, msg.is_dm, msg.channel) == (0xA1, 77, "hi", True, 0)
    assert (msg.hops, msg.snr, msg.rssi, msg.payload_len) == (2, 5.5, -90, 2)


def test_broadcast_channel_and_tapback() -> None:
    msg = parse_packet(
        text_packet(to=0xFFFFFFFF, channel=2, decoded={"portnum": "TEXT_MESSAGE_APP", "text": "👍", "emoji": 1}), ME
    )
    assert not msg.is_dm and msg.channel == 2 and msg.emoji


def test_invalid_utf8_has_no_text() -> None:
    msg = parse_packet(text_packet(decoded={"portnum": "TEXT_MESSAGE_APP", "payload": b"\xff\xfe"}), ME)
    assert msg.text is None and msg.payload_len == 2


@pytest.mark.parametrize("packet", [{}, {"from": 1}, {"from": "x", "id": 1}, {"from": 1, "id": 2, "to": None}])
def test_malformed_packets_raise(packet) -> None:
    with pytest.raises(MalformedPacket):
        parse_packet(packet, ME)


def test_ack_nak_and_implicit_ack() -> None:
    nak = {"from": ME, "decoded": {"routing": {"errorReason": "RATE_LIMIT_EXCEEDED"}}}
    assert result_of(nak, 5, ME).reason == "RATE_LIMIT_EXCEEDED"
    assert result_of({"from": 0xA1, "decoded": {"routing": {}}}, 5, ME).status is AckStatus.ACKED
    assert result_of({"from": ME, "decoded": {"routing": {"errorReason": "NONE"}}}, 5, ME).status is AckStatus.IMPLICIT


def test_host_parsing() -> None:
    assert split_host("meshnode") == ("meshnode", 4403)
    assert split_host("10.0.0.5:4404") == ("10.0.0.5", 4404)
    assert split_host("[::1]:4405") == ("::1", 4405)


class Ticks:
    """A hand-wound clock for the ACK router."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_handed_to_the_send_it_answers_even_if_it_came_first() -> None:
    router, got = AckRouter(600.0, Ticks()), []
    router.resolve(7, SendResult(7, AckStatus.ACKED))  # published before send() knew its id
    router.expect(7, got.append)
    router.expect(8, got.append)
    router.resolve(8, SendResult(8, AckStatus.NAKED, "MAX_RETRANSMIT"))
    router.resolve(8, SendResult(8, AckStatus.ACKED))  # a second answer finds no one waiting
    assert [(r.packet_id, r.status) for r in got] == [(7, AckStatus.ACKED), (8, AckStatus.NAKED)]


def test_sends_nobody_answers_are_forgotten_after_their_time() -> None:
    ticks = Ticks()
    router, got = AckRouter(600.0, ticks), []
    router.expect(1, got.append)
    router.resolve(99, SendResult(99, AckStatus.ACKED))  # an answer for a send we never made
    ticks.now = 601.0
    router.expect(2, got.append)
    assert router.pending() == 1  # only the new one
    router.resolve(1, SendResult(1, AckStatus.ACKED))
    router.expect(99, got.append)  # the stray answer was dropped too
    assert got == []


@pytest.mark.parametrize(
    ("hop_start", "hop_limit", "hops"),
    [(3, 3, 0), (7, 0, 7), (200, 7, None), (3, 5, None), (9, 9, None), (3, -1, None), (None, 3, None)],
)
def test_hop_counts_outside_the_three_bit_header_are_unknown(hop_start, hop_limit, hops) -> None:
    # A corrupt header (hop_start 200) used to read as "193 hops"; the ping reply and the log say "?" instead.
    packet = text_packet(hopStart=hop_start, hopLimit=hop_limit)
    assert parse_packet(packet, ME).hops == hops
