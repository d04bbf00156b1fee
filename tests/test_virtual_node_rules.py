"""The virtual node's pure parts, without a node: framing, firmware text rules, rendering."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st
from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot.core import limits
from meshbot.sim import SentPacket, format_handset_line, format_sent
from meshbot.sim.rules import firmware as fw
from meshbot.sim.rules.framing import FrameDecoder, encode_frame
from tests.virtual_node_support import ALICE

# ----- pure parts: framing, firmware rules, rendering ------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=limits.STREAM_MAX_FRAME_LEN), max_size=5),
    noise=st.lists(st.binary(max_size=8).map(lambda b: b.replace(b"\x94", b"")), min_size=6, max_size=6),
    cut=st.integers(min_value=1, max_value=64),
)
def test_decoder_recovers_every_frame_through_noise_and_any_chunking(payloads, noise, cut):
    stream = bytes([limits.STREAM_START2] * 32) + b"".join(
        n + encode_frame(p) for n, p in zip(noise, payloads, strict=False)
    )
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(stream), cut):
        out.extend(decoder.feed(stream[i : i + cut]))
    assert out == payloads


def test_decoder_drops_a_frame_over_512_bytes_and_resyncs():
    decoder = FrameDecoder()
    oversize = bytes([0x94, 0xC3, 0x02, 0x01]) + b"\x00" * 513
    assert decoder.feed(oversize + encode_frame(b"ok")) == [b"ok"]
    assert decoder.dropped_oversize == 1


@given(size=st.integers(min_value=1, max_value=limits.DATA_PAYLOAD_LEN), dm=st.booleans(), reply=st.booleans())
def test_too_large_matches_the_documented_text_limits(size, dm, reply):
    packet = mesh_pb2.MeshPacket(to=ALICE if dm else limits.BROADCAST_NUM)
    packet.decoded.portnum = portnums_pb2.TEXT_MESSAGE_APP
    packet.decoded.payload = b"a" * size
    if reply:
        packet.decoded.reply_id = 0xFFFFFFFF
    limit = {
        (False, False): limits.MAX_TEXT_BYTES_CHANNEL,
        (False, True): limits.MAX_TEXT_BYTES_CHANNEL_WITH_REPLY_ID,
        (True, False): limits.MAX_TEXT_BYTES_DM,
        (True, True): limits.MAX_TEXT_BYTES_DM_WITH_REPLY_ID,
    }[(dm, reply)]
    assert fw.too_large(packet, pki=fw.uses_pki(packet, dest_has_key=True)) == (size > limit)
    assert fw.frame_len_on_air(packet, pki=dm) == limits.text_frame_len(size, reply_id=reply, pki=dm)


@given(gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=20))
def test_rate_limiter_admits_texts_at_least_two_seconds_apart(gaps):
    limiter = fw.TextRateLimiter()
    now, admitted = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.admit(now):
            admitted.append(now)
    assert all(b - a >= limits.TEXT_RATE_LIMIT_S for a, b in zip(admitted, admitted[1:], strict=False))
    assert bool(gaps) == bool(admitted)  # the first text always goes


def test_handset_line_shows_sender_hops_text_and_size():
    line = format_handset_line(
        at=time.mktime((2024, 1, 1, 12, 0, 3, 0, 1, -1)), sender="BOT", recipient="you", text="1/+ text…", hops=2
    )
    assert line == "[12:00:03] BOT → you (2 hops): 1/+ text… (11 B)"
    record = SentPacket(
        1, limits.BROADCAST_NUM, 0, "TEXT_MESSAGE_APP", b"x" * 233, "x" * 233, False, 3, None, 0.0, "TOO_LARGE"
    )
    assert format_sent(record, at=0.0, max_chars=10).endswith(": xxxxxxxxx… (233 B) [TOO_LARGE]")


def test_a_resend_under_the_same_id_ends_the_earlier_copys_record_too() -> None:
    # A client reconnects and sends a packet again under its id (meshbot's same-id resend): the node restarts the
    # wait, and the first copy's record must end with the second's verdict, not stay pending for ever.
    import threading

    from meshtastic.protobuf import mesh_pb2

    from meshbot.core.clock import VirtualClock
    from meshbot.sim.air.scheduler import Scheduler
    from meshbot.sim.rules.reliable import ReliableSends

    ended: list[tuple[int, str]] = []
    reliable = ReliableSends(
        scheduler=Scheduler(clock=VirtualClock(), manual=True),
        lock=threading.RLock(),
        interval_s=lambda packet: 5.0,
        transmit=lambda packet: None,
        finish=lambda pending, error, implicit: ended.extend((i, error) for i in (*pending.earlier, pending.index)),
    )
    packet = mesh_pb2.MeshPacket(id=0x1234, to=0x0A11CE00, want_ack=True)
    reliable.track(1, packet)
    reliable.track(2, packet)  # the same id again, from a new session
    reliable.resolve(0x1234, "NONE", implicit=False)
    assert ended == [(1, "NONE"), (2, "NONE")]
    assert len(reliable) == 0
