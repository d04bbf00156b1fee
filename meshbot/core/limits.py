"""Radio limits the bot relies on, each named after its source.

Sources: `shared/mesh-facts.md` and `firmware-notes/limits.md` (firmware 2.7.26 and
2.8.0-dev, python package `meshtastic` 2.7.11). Change a number here and nowhere else.
"""

from __future__ import annotations

# mesh.proto `Constants.DATA_PAYLOAD_LEN`: the payload limit the python library checks in sendData.
DATA_PAYLOAD_LEN = 233
# RadioInterface.h: the LoRa header on top of the Data payload, and the largest LoRa frame.
LORA_HEADER_LEN = 16
MAX_LORA_FRAME_LEN = 255
# Router.cpp: a PKI-encrypted DM costs this much more on air.
PKI_OVERHEAD_LEN = 12

# The largest UTF-8 text that really goes out (mesh-facts "Sizes").
MAX_TEXT_BYTES_CHANNEL = 232
MAX_TEXT_BYTES_CHANNEL_WITH_REPLY_ID = 227
MAX_TEXT_BYTES_DM = 220
MAX_TEXT_BYTES_DM_WITH_REPLY_ID = 215
# The official apps cap typed text here: the safe default budget of every fragment.
APP_TEXT_LIMIT_BYTES = 200

# PhoneAPI.cpp: a text within this many seconds of the previous one is dropped (NAK from 2.7.4).
TEXT_RATE_LIMIT_S = 2.0
# The firmware times the gap on its side of the serial/TCP link; transport jitter can shrink a
# 2.0 s gap we measured to 1.99 s there, so we never go below the limit plus this margin.
TEXT_RATE_LIMIT_MARGIN_S = 0.25
# RadioInterface.h `MAX_TX_QUEUE`: TX queue depth; NextHopRouter.h `NUM_RELIABLE_RETX`: retransmissions.
TX_QUEUE_SLOTS = 16
MAX_RETRANSMIT = 3  # transmissions in all (the first + 2 retries) before MAX_RETRANSMIT
# RadioInterface.h `PROCESSING_TIME_MSEC`: part of the wait before a want-ACK packet is sent
# again (getRetransmissionMsec adds twice its air time and some contention slots).
RETRANSMIT_PROCESSING_S = 4.5
# NextHopRouter.h (HEAD) `computeDesiredRetransmissionCodingRate`: retries go out at up to 4/8.
RETRANSMIT_CODING_RATE = 8
DEFAULT_HOP_LIMIT = 3
MAX_HOP_LIMIT = 7

# mesh.proto: the broadcast address.
BROADCAST_NUM = 0xFFFFFFFF
# StreamAPI.h / stream_interface.py: frame start bytes, the largest frame, default TCP port.
STREAM_START1 = 0x94
STREAM_START2 = 0xC3
STREAM_MAX_FRAME_LEN = 512
DEFAULT_TCP_PORT = 4403


# A text's Data costs this much besides the text (portnum, payload tag and length,
# the firmware's 2-byte bitfield). 7 bytes once the text is 128 bytes or longer.
def data_overhead_len(text_len: int, reply_id: bool = False) -> int:
    """Bytes a Data protobuf adds around a text payload of `text_len` bytes."""
    length_varint = 1 if text_len < 128 else 2
    overhead = 2 + 1 + length_varint + 2  # portnum, payload tag+len, bitfield
    if reply_id:
        overhead += 5  # tag + fixed32 reply_id
    return overhead


def text_frame_len(text_len: int, *, reply_id: bool = False, pki: bool = False) -> int:
    """Bytes on air of a LoRa frame carrying a text of `text_len` UTF-8 bytes."""
    frame = LORA_HEADER_LEN + data_overhead_len(text_len, reply_id) + text_len
    return frame + (PKI_OVERHEAD_LEN if pki else 0)


# RoutingModule::allocAckNak: the ACK our node sends for every DM that wants one (the apps always
# ask): 16-byte header + Data{portnum, Routing payload, request_id, bitfield}. It counts against
# the node's duty cycle like any other transmission.
ROUTING_ACK_FRAME_LEN = 29

# Regions: the firmware's rolling-hour duty-cycle share (RadioInterface.cpp region table).
DUTY_CYCLE_PERCENT = {
    "EU_868": 10.0,
    "EU_N_868": 10.0,
    "EU_433": 10.0,
    "UA_433": 10.0,
    "TH": 10.0,
    "UA_868": 1.0,
    "EU_866": 2.5,
}
DEFAULT_DUTY_CYCLE_PERCENT = 100.0


def duty_cycle_percent(region: str) -> float:
    """The firmware's duty-cycle share for a region name such as ``EU_868``."""
    return DUTY_CYCLE_PERCENT.get(region.upper(), DEFAULT_DUTY_CYCLE_PERCENT)
