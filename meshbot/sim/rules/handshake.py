"""The config download a node sends after ``want_config_id``, in the firmware's order. Pure.

PhoneAPI.cpp getFromRadio walks: my_info, own node_info, metadata, 8 channels, every config
section, every module config, other nodes' node_info, then ``config_complete_id`` = nonce.
The nonce 69420 (what ``noNodes=True`` sends) skips other nodes; 69421 sends only node infos.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from meshtastic.protobuf import channel_pb2, config_pb2, mesh_pb2, module_config_pb2

from meshbot.core.ids import node_id

# PhoneAPI.h SPECIAL_NONCE_ONLY_CONFIG / SPECIAL_NONCE_ONLY_NODES.
NONCE_ONLY_CONFIG = 69420
NONCE_ONLY_NODES = 69421
# Channels.h MAX_NUM_CHANNELS.
MAX_NUM_CHANNELS = 8
# What we claim to be: the native Linux firmware, a version with the text NAKs of 2.7.4+.
FIRMWARE_VERSION = "2.7.26.sim"
DEVICE_STATE_VERSION = 24
MIN_APP_VERSION = 30200
# channel.proto: psk of one byte 0x01 is "the default key".
DEFAULT_PSK = b"\x01"
PUBLIC_KEY_LEN = 32


def sim_private_key(num: int) -> bytes:
    """A virtual node's X25519 private key, derived from its number: stable across runs, known to the simulator."""
    return hashlib.sha256(b"meshbot-sim-key:%d" % num).digest()[:PUBLIC_KEY_LEN]


def sim_public_key(num: int) -> bytes:
    """A virtual node's real X25519 public key (MQTT gateways encrypt PKI DMs with the pair, as the node would)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(sim_private_key(num)).public_key().public_bytes_raw()


@dataclass(frozen=True)
class Identity:
    """A node as the node DB knows it."""

    num: int
    long_name: str
    short_name: str
    public_key: bytes = b""
    hops_away: int = 0
    snr: float = 0.0
    last_heard: int = 0

    def user(self) -> mesh_pb2.User:
        """The User protobuf, with the firmware's ``!%08x`` id."""
        user = mesh_pb2.User(id=node_id(self.num), long_name=self.long_name, short_name=self.short_name)
        user.hw_model = mesh_pb2.HardwareModel.PORTDUINO
        user.role = config_pb2.Config.DeviceConfig.Role.CLIENT
        if self.public_key:
            user.public_key = self.public_key
        return user


@dataclass(frozen=True)
class RadioSettings:
    """The LoRa and channel settings a node reports."""

    modem_preset: str = "LONG_FAST"
    region: str = "US"
    hop_limit: int = 3
    channel_names: tuple[str, ...] = ("",)  # index 0 is PRIMARY; "" is the preset's default name
    tx_enabled: bool = True  # lora.tx_enabled: False makes a node that only listens

    def lora(self) -> config_pb2.Config.LoRaConfig:
        """The LoRaConfig protobuf; raises ValueError for an unknown preset or region name."""
        lora = config_pb2.Config.LoRaConfig()
        lora.use_preset = True
        lora.modem_preset = config_pb2.Config.LoRaConfig.ModemPreset.Value(self.modem_preset)
        lora.region = config_pb2.Config.LoRaConfig.RegionCode.Value(self.region)
        lora.hop_limit = self.hop_limit
        lora.tx_enabled = self.tx_enabled
        lora.tx_power = 30
        lora.sx126x_rx_boosted_gain = True
        return lora


def _my_info(own: Identity) -> mesh_pb2.FromRadio:
    message = mesh_pb2.FromRadio()
    info = message.my_info
    info.my_node_num = own.num
    info.reboot_count = 1
    info.min_app_version = MIN_APP_VERSION
    info.device_id = hashlib.sha256(b"meshbot-sim-device:%d" % own.num).digest()[:16]
    info.pio_env = "native"
    return message


def _node_info(node: Identity, *, is_self: bool) -> mesh_pb2.FromRadio:
    message = mesh_pb2.FromRadio()
    info = message.node_info
    info.num = node.num
    info.user.CopyFrom(node.user())
    if node.last_heard:
        info.last_heard = node.last_heard
    if is_self:
        info.is_favorite = True  # PhoneAPI marks our own entry a favourite
    else:
        info.snr = node.snr
        info.hops_away = node.hops_away
    return message


def _metadata() -> mesh_pb2.FromRadio:
    message = mesh_pb2.FromRadio()
    meta = message.metadata
    meta.firmware_version = FIRMWARE_VERSION
    meta.device_state_version = DEVICE_STATE_VERSION
    meta.canShutdown = True
    meta.hasWifi = True
    meta.hasPKC = True
    meta.role = config_pb2.Config.DeviceConfig.Role.CLIENT
    meta.hw_model = mesh_pb2.HardwareModel.PORTDUINO
    return message


def channel(index: int, names: tuple[str, ...]) -> channel_pb2.Channel:
    """Channel `index` of a node whose enabled channels are named `names` (the rest DISABLED)."""
    chan = channel_pb2.Channel(index=index)
    if index < len(names):
        chan.role = channel_pb2.Channel.Role.PRIMARY if index == 0 else channel_pb2.Channel.Role.SECONDARY
        chan.settings.psk = DEFAULT_PSK
        chan.settings.name = names[index]
        chan.settings.module_settings.position_precision = 0
    else:
        chan.role = channel_pb2.Channel.Role.DISABLED
    return chan


def _channels(radio: RadioSettings) -> list[mesh_pb2.FromRadio]:
    out = []
    for index in range(MAX_NUM_CHANNELS):
        message = mesh_pb2.FromRadio()
        message.channel.CopyFrom(channel(index, radio.channel_names))
        out.append(message)
    return out


def _configs(own: Identity, radio: RadioSettings) -> list[mesh_pb2.FromRadio]:
    sections: list[mesh_pb2.FromRadio] = []
    for name in ("device", "position", "power", "network", "display", "lora", "bluetooth", "security"):
        message = mesh_pb2.FromRadio()
        getattr(message.config, name).SetInParent()
        sections.append(message)
    by_name = {m.config.WhichOneof("payload_variant"): m for m in sections}
    by_name["device"].config.device.role = config_pb2.Config.DeviceConfig.Role.CLIENT
    by_name["lora"].config.lora.CopyFrom(radio.lora())
    by_name["security"].config.security.public_key = own.public_key
    by_name["security"].config.security.serial_enabled = True
    return sections


def _module_configs() -> list[mesh_pb2.FromRadio]:
    out = []
    for field_desc in module_config_pb2.ModuleConfig.DESCRIPTOR.oneofs_by_name["payload_variant"].fields:
        message = mesh_pb2.FromRadio()
        getattr(message.moduleConfig, field_desc.name).SetInParent()
        out.append(message)
    return out


def config_messages(own: Identity, peers: list[Identity], radio: RadioSettings, nonce: int) -> list[mesh_pb2.FromRadio]:
    """Every FromRadio the node sends for ``want_config_id = nonce``, ending in config_complete_id."""
    messages: list[mesh_pb2.FromRadio] = []
    if nonce != NONCE_ONLY_NODES:
        messages.append(_my_info(own))
    messages.append(_node_info(own, is_self=True))
    if nonce != NONCE_ONLY_NODES:
        messages.append(_metadata())
        messages.extend(_channels(radio))
        messages.extend(_configs(own, radio))
        messages.extend(_module_configs())
    if nonce != NONCE_ONLY_CONFIG:
        messages.extend(_node_info(peer, is_self=False) for peer in peers)
    done = mesh_pb2.FromRadio()
    done.config_complete_id = nonce
    messages.append(done)
    return messages
