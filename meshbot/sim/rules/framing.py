"""The Meshtastic stream framing: ``0x94 0xC3``, a 2-byte big-endian length, a protobuf. Pure.

The decoder behaves like the firmware's StreamAPI receive loop: it skips any byte that does
not start a frame (the client's 32x``0xC3`` wake-up, log text, line noise), and a header
announcing more than `limits.STREAM_MAX_FRAME_LEN` bytes is dropped and scanning resumes
right after the bad header.
"""

from __future__ import annotations

from meshbot.core import limits

HEADER_LEN = 4


class FrameTooLarge(ValueError):
    """A payload that the stream protocol cannot carry."""


def encode_frame(payload: bytes) -> bytes:
    """Frame one serialized ToRadio/FromRadio protobuf for the stream."""
    size = len(payload)
    if size > limits.STREAM_MAX_FRAME_LEN:
        raise FrameTooLarge(f"{size} bytes is over the {limits.STREAM_MAX_FRAME_LEN}-byte frame limit")
    header = bytes((limits.STREAM_START1, limits.STREAM_START2, size >> 8, size & 0xFF))
    return header + payload


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frame payloads back."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.dropped_oversize = 0  # headers announcing a frame over the limit
        self.skipped_bytes = 0  # bytes outside any frame (wake-up, noise)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads of every frame now complete."""
        self._buf.extend(data)
        frames: list[bytes] = []
        while True:
            payload = self._next_frame()
            if payload is None:
                return frames
            frames.append(payload)

    def _next_frame(self) -> bytes | None:
        buf = self._buf
        while buf:
            if buf[0] != limits.STREAM_START1:
                self._skip(1)
                continue
            if len(buf) < 2:
                return None
            if buf[1] != limits.STREAM_START2:
                # Drop only START1: the byte after it may itself start a frame.
                self._skip(1)
                continue
            if len(buf) < HEADER_LEN:
                return None
            size = (buf[2] << 8) | buf[3]
            if size > limits.STREAM_MAX_FRAME_LEN:
                self.dropped_oversize += 1
                self._skip(HEADER_LEN)  # firmware resyncs on the bytes after a bad header
                continue
            if len(buf) < HEADER_LEN + size:
                return None
            payload = bytes(buf[HEADER_LEN : HEADER_LEN + size])
            del buf[: HEADER_LEN + size]
            return payload
        return None

    def _skip(self, count: int) -> None:
        self.skipped_bytes += count
        del self._buf[:count]

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)
