"""The radio boundary's packet parsing and ACK reading, on the library's dict format."""

from __future__ import annotations

import pytest

from meshbot.domain import AckStatus
from meshbot.radio import MalformedPacket, parse_packet, result_of, split_host

ME = 0x1234ABCD


def text_packet(**kw):
    packet = {"from": 0xA1, "to": ME, "id": 77, "rxSnr": 5.5, "rxRssi": -90, "hopStart": 3, "hopLimit": 1,
              "decoded": {"portnum": "TEXT_MESSAGE_APP", "payload": b"hi", "text": "hi"}}
    packet.update(kw)
    return packet


def test_a_dm_is_parsed_with_hops_and_signal() -> None:
    msg = parse_packet(text_packet(), ME)
    assert (msg.sender, msg.packet_id, msg.text, msg.is_dm, msg.channel) == (0xA1, 77, "hi", True, 0)
    assert (msg.hops, msg.snr, msg.rssi, msg.payload_len) == (2, 5.5, -90, 2)


def test_broadcast_channel_and_tapback() -> None:
    msg = parse_packet(text_packet(to=0xFFFFFFFF, channel=2,
                                   decoded={"portnum": "TEXT_MESSAGE_APP", "text": "👍", "emoji": 1}), ME)
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
    assert result_of({"from": ME, "decoded": {"routing": {"errorReason": "NONE"}}}, 5, ME).status \
        is AckStatus.IMPLICIT


def test_host_parsing() -> None:
    assert split_host("meshnode") == ("meshnode", 4403)
    assert split_host("10.0.0.5:4404") == ("10.0.0.5", 4404)
    assert split_host("[::1]:4405") == ("::1", 4405)
