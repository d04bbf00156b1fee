"""Meshtastic packet crypto as the firmware does it (src/mesh/CryptoEngine.cpp, src/mesh/Channels.cpp).

Channel packets: AES-CTR under the channel PSK, nonce = packet id (u64 LE) + sender (u32 LE) + 4 zero bytes.
PKI DMs: AES-CCM (8-byte tag) under SHA-256(X25519 shared secret), 13-byte nonce = packet id (u32 LE) +
extra nonce (u32 LE) + sender (u32 LE) + 0; on the wire ciphertext + tag + extra nonce.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from functools import reduce

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

# The firmware's default channel key (Channels.cpp defaultpsk); a 1-byte PSK n>=1 names it, last byte + n-1.
DEFAULT_KEY = bytes.fromhex("d4f1bb3a20290759f0bcffabcf4e6901")
PKI_TAG_BYTES = 8
PKI_OVERHEAD = PKI_TAG_BYTES + 4  # tag + extra nonce
KEY_BYTES = 32


class CryptoError(ValueError):
    """A packet that cannot be decrypted: wrong key, tampered or truncated."""


def expand_psk(psk: bytes) -> bytes:
    """The AES key a channel PSK stands for (empty: no encryption)."""
    if len(psk) == 0:
        return b""
    if len(psk) == 1:
        index = psk[0]
        if index == 0:
            return b""
        return DEFAULT_KEY[:-1] + bytes([(DEFAULT_KEY[-1] + index - 1) & 0xFF])
    if len(psk) < 16:
        return psk.ljust(16, b"\0")  # the firmware zero-pads short keys to AES-128
    if len(psk) < 32:
        return psk.ljust(32, b"\0") if len(psk) > 16 else psk
    return psk[:32]


def _xor(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


def channel_hash(name: str, key: bytes) -> int:
    """The packet `channel` byte: XOR of the name's bytes with XOR of the (expanded) key's bytes."""
    return _xor(name.encode("utf-8")) ^ _xor(key)


def channel_nonce(packet_id: int, sender: int) -> bytes:
    """The 16-byte AES-CTR initial counter block."""
    return struct.pack("<QI", packet_id, sender) + b"\0\0\0\0"


def channel_crypt(key: bytes, packet_id: int, sender: int, data: bytes) -> bytes:
    """Encrypt or decrypt (CTR is symmetric) a channel packet's payload; an empty key is plaintext."""
    if not key:
        return bytes(data)
    ctr = Cipher(algorithms.AES(key), modes.CTR(channel_nonce(packet_id, sender))).encryptor()
    return ctr.update(data) + ctr.finalize()


def generate_private_key() -> bytes:
    """A fresh X25519 private key, 32 raw bytes."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key_of(private_key: bytes) -> bytes:
    """The X25519 public key, 32 raw bytes."""
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def pki_key(private_key: bytes, public_key: bytes) -> bytes:
    """SHA-256 of the X25519 shared secret: the AES-CCM key between us and `public_key`'s owner."""
    if len(public_key) != KEY_BYTES:
        raise CryptoError(f"a public key is {KEY_BYTES} bytes, got {len(public_key)}")
    try:
        shared = X25519PrivateKey.from_private_bytes(private_key).exchange(
            X25519PublicKey.from_public_bytes(public_key)
        )
    except ValueError as exc:  # an all-zero shared secret: a weak (low-order) public key
        raise CryptoError(str(exc)) from None
    return hashlib.sha256(shared).digest()


def pki_nonce(packet_id: int, extra_nonce: int, sender: int) -> bytes:
    """The 13-byte CCM nonce: id (u32 LE), extra nonce (u32 LE), sender (u32 LE), 0."""
    return struct.pack("<III", packet_id & 0xFFFFFFFF, extra_nonce, sender) + b"\0"


def pki_encrypt(key: bytes, packet_id: int, sender: int, plaintext: bytes, extra_nonce: int | None = None) -> bytes:
    """Ciphertext + 8-byte tag + extra nonce (u32 LE), as the firmware puts a PKI packet on air."""
    extra = secrets.randbits(32) if extra_nonce is None else extra_nonce
    sealed = AESCCM(key, tag_length=PKI_TAG_BYTES).encrypt(pki_nonce(packet_id, extra, sender), plaintext, None)
    return sealed + struct.pack("<I", extra)


def pki_decrypt(key: bytes, packet_id: int, sender: int, wire: bytes) -> bytes:
    """The plaintext of a PKI packet; CryptoError when it is truncated, tampered or for another key."""
    if len(wire) <= PKI_OVERHEAD:
        raise CryptoError(f"PKI payload of {len(wire)} bytes is shorter than its {PKI_OVERHEAD}-byte overhead")
    (extra,) = struct.unpack("<I", wire[-4:])
    try:
        return AESCCM(key, tag_length=PKI_TAG_BYTES).decrypt(pki_nonce(packet_id, extra, sender), wire[:-4], None)
    except InvalidTag:
        raise CryptoError("PKI tag does not verify (wrong key or tampered)") from None
