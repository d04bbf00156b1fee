"""The mqtt transport's packet crypto against the firmware's and the C# library's reference vectors,
and round-trips for any packet id, sender and payload."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot.core.events import Reason
from meshbot.radios.mqtt import codec, crypto
from meshbot.radios.mqtt.codec import Channel, Dropped, Header

# firmware test/test_crypto/test_main.cpp, test_PKC
PKC_PRIVATE = bytes.fromhex("a00330633e63522f8a4d81ec6d9d1e6617f6c8ffd3a4c698229537d44e522277")
PKC_PUBLIC = bytes.fromhex("db18fc50eea47f00251cb784819a3cf5fc361882597f589f0d7ff820e8064457")
PKC_FROM, PKC_ID = 0x0929, 0x13B2D662
PKC_RADIO = bytes.fromhex("8c646d7a2909000062d6b2136b00000040df24abfcc30a17a3d9046726099e796a1c036a792b")
PKC_NONCE = bytes.fromhex("62d6b213036a792b2909000000")
PKC_PLAIN = bytes.fromhex("08011204746573744800")

# meshtastic/c-sharp Meshtastic.Test/Crypto/PacketCryptoTests.cs, TestDefaultKeyDecrypt (LongFast, gateway !fa8165a4)
CS_FROM, CS_ID, CS_CHANNEL = 4202784164, 1777428186, 8
CS_ENCRYPTED = base64.b64decode("kiDV39nDDsi8AON+Czei6zUpy+F/7E+lyIpicxJR40KXBFmPkqFUEnobI5voQadha+s=")

ids = st.integers(min_value=1, max_value=0xFFFFFFFF)
nodes = st.integers(min_value=1, max_value=0xFFFFFFFE)
payloads = st.binary(min_size=1, max_size=237)


def test_default_psk_expands_to_the_firmware_key_and_longfast_hashes_to_8() -> None:
    key = crypto.expand_psk(base64.b64decode("AQ=="))
    assert key.hex() == "d4f1bb3a20290759f0bcffabcf4e6901"
    assert crypto.channel_hash("LongFast", key) == CS_CHANNEL
    assert crypto.expand_psk(b"\x02")[-1] == 0x02  # index n: the default key's last byte plus n-1
    assert crypto.expand_psk(b"\x00") == b""  # index 0: no encryption


def test_csharp_longfast_nodeinfo_vector_decrypts() -> None:
    channel = Channel.from_psk("LongFast", b"\x01")
    packet = mesh_pb2.MeshPacket(to=0xFFFFFFFF, channel=CS_CHANNEL, encrypted=CS_ENCRYPTED, id=CS_ID, hop_limit=3)
    setattr(packet, "from", CS_FROM)
    data = codec.open_channel(packet, channel)
    assert data.portnum == portnums_pb2.NODEINFO_APP
    user = codec.parse_user(data)
    assert user is not None and user.long_name == "Meshtastic 65a4"


def test_firmware_pkc_vector_decrypts_with_its_nonce_and_key() -> None:
    key = crypto.pki_key(PKC_PRIVATE, PKC_PUBLIC)
    assert key[:8].hex() == "777b1545c9d6f9a2"  # the firmware checks the hashed shared key's first 8 bytes
    wire = PKC_RADIO[16:]  # after the 16-byte radio header
    assert len(wire) == 22
    assert crypto.pki_nonce(PKC_ID, int.from_bytes(wire[-4:], "little"), PKC_FROM) == PKC_NONCE
    assert crypto.pki_decrypt(key, PKC_ID, PKC_FROM, wire) == PKC_PLAIN
    # and re-encrypted with the same extra nonce, the bytes on air are the firmware's
    assert crypto.pki_encrypt(key, PKC_ID, PKC_FROM, PKC_PLAIN, extra_nonce=0x2B796A03) == wire


def test_firmware_pkc_packet_through_the_codec() -> None:
    packet = mesh_pb2.MeshPacket(to=0x1234, id=PKC_ID, encrypted=PKC_RADIO[16:], pki_encrypted=True)
    setattr(packet, "from", PKC_FROM)
    data = codec.open_pki(packet, PKC_PRIVATE, PKC_PUBLIC)
    assert data.portnum == portnums_pb2.TEXT_MESSAGE_APP and data.payload == b"test"


@pytest.mark.parametrize("cut", [0, 1, 11, 12, 21])
def test_truncated_or_tampered_pki_is_refused(cut: int) -> None:
    key = crypto.pki_key(PKC_PRIVATE, PKC_PUBLIC)
    wire = PKC_RADIO[16:]
    with pytest.raises(crypto.CryptoError):
        crypto.pki_decrypt(key, PKC_ID, PKC_FROM, wire[:cut])
    tampered = bytes([wire[0] ^ 1]) + wire[1:]
    with pytest.raises(crypto.CryptoError):
        crypto.pki_decrypt(key, PKC_ID, PKC_FROM, tampered)


@given(
    packet_id=ids, sender=nodes, plain=payloads, psk=st.sampled_from([b"\x01", b"\x05", bytes(range(16)), bytes(32)])
)
def test_channel_crypt_round_trips(packet_id: int, sender: int, plain: bytes, psk: bytes) -> None:
    key = crypto.expand_psk(psk)
    sealed = crypto.channel_crypt(key, packet_id, sender, plain)
    assert len(sealed) == len(plain)
    assert crypto.channel_crypt(key, packet_id, sender, sealed) == plain


_A, _B = crypto.generate_private_key(), crypto.generate_private_key()


@given(packet_id=ids, sender=nodes, plain=payloads)
def test_pki_round_trips_between_two_key_pairs(packet_id: int, sender: int, plain: bytes) -> None:
    sealed = crypto.pki_encrypt(crypto.pki_key(_A, crypto.public_key_of(_B)), packet_id, sender, plain)
    assert len(sealed) == len(plain) + crypto.PKI_OVERHEAD
    assert crypto.pki_decrypt(crypto.pki_key(_B, crypto.public_key_of(_A)), packet_id, sender, sealed) == plain
    with pytest.raises(crypto.CryptoError):  # another sender: another nonce
        crypto.pki_decrypt(crypto.pki_key(_B, crypto.public_key_of(_A)), packet_id, sender ^ 1, sealed)


text = st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 200)


@given(packet_id=ids, sender=nodes, dest=nodes, body=text)
def test_pki_text_packet_round_trips_through_an_envelope(packet_id: int, sender: int, dest: int, body: str) -> None:
    data = codec.text_data(body, reply_id=None, ok_to_mqtt=True)
    packet = codec.seal_pki(Header(sender, dest, packet_id, 3, True), data, _A, crypto.public_key_of(_B))
    wire = codec.envelope(packet, "PKI", sender)
    got, channel_id, _ = codec.parse_envelope(wire)
    assert codec.is_pki(got, channel_id) and got.channel == 0
    opened = codec.open_pki(got, _B, crypto.public_key_of(_A))
    inbound = codec.to_inbound(got, opened, dest, pki=True)
    assert (inbound.sender, inbound.packet_id, inbound.text, inbound.is_dm, inbound.pki) == (
        sender,
        packet_id,
        body,
        True,
        True,
    )


@given(packet_id=ids, sender=nodes, body=text)
def test_channel_text_packet_round_trips_through_an_envelope(packet_id: int, sender: int, body: str) -> None:
    channel = Channel.from_psk("LongFast", b"\x01")
    packet = codec.seal_channel(Header(sender, 0xFFFFFFFF, packet_id, 3), codec.text_data(body, 7, True), channel)
    got, channel_id, _ = codec.parse_envelope(codec.envelope(packet, "LongFast", sender))
    assert not codec.is_pki(got, channel_id)
    data = codec.open_channel(got, channel)
    assert data.bitfield & codec.OK_TO_MQTT_BIT
    inbound = codec.to_inbound(got, data, 0x1234, pki=False)
    assert (inbound.text, inbound.reply_id, inbound.is_dm) == (body, 7, False)


def test_another_channel_key_is_undecryptable_not_a_crash() -> None:
    ours, theirs = Channel.from_psk("LongFast", b"\x01"), Channel("LongFast", bytes(range(16)))
    packet = codec.seal_channel(Header(5, 0xFFFFFFFF, 77, 3), codec.text_data("hi", None, True), theirs)
    with pytest.raises(Dropped) as caught:
        codec.open_channel(packet, ours)
    assert caught.value.reason == Reason.UNDECRYPTABLE


@given(st.binary(max_size=300))
def test_garbage_envelopes_are_dropped_with_a_reason(raw: bytes) -> None:
    try:
        packet, _, _ = codec.parse_envelope(raw)
    except Dropped as drop:
        assert drop.reason == Reason.GARBAGE
        return
    assert codec.sender_of(packet) and packet.id  # what parses has a sender and an id
