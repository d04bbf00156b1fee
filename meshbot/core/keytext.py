"""Channel PSKs and X25519 keys as operators write them: base64 text. Pure, for config validation."""

from __future__ import annotations

import base64
import binascii

PSK_SIZES = (0, 1, 16, 32)  # none, a default-key index, AES-128, AES-256
KEY_BYTES = 32


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not valid base64 ({exc})") from None


def parse_psk_bytes(text: str) -> bytes:
    """A channel PSK from base64 ("AQ==" is the default channel); ValueError naming the problem."""
    raw = _b64(text)
    if len(raw) not in PSK_SIZES:
        raise ValueError(f"a PSK is 0, 1, 16 or 32 bytes, got {len(raw)}")
    return raw


def parse_key_bytes(text: str) -> bytes:
    """A 32-byte X25519 key from base64; ValueError naming the problem (never the key itself)."""
    raw = _b64(text)
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 key is {KEY_BYTES} bytes of base64, got {len(raw)} bytes")
    return raw
