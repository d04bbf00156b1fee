"""A real mosquitto for tests, and handsets that reach the bot through MQTT gateways as the firmware does."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from meshtastic.protobuf import mesh_pb2, portnums_pb2
from paho.mqtt.enums import CallbackAPIVersion

from meshbot.core.config import Config, load_config
from meshbot.radios.mqtt import codec, crypto
from meshbot.radios.mqtt.codec import BROADCAST, Channel, Dropped, Header
from tests.fakes import AI_TAG

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ROOT = "msh/US"
LONGFAST = Channel.from_psk("LongFast", b"\x01")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """mosquitto on 127.0.0.1 with persistence, so a restart keeps sessions and their QoS 1 backlog."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nlog_dest file {self.log}\nlog_type all\n"
            # Run as root, mosquitto would drop to the `mosquitto` user, who cannot write its log and
            # persistence file here (and a restart would lose every session).
            f"user {getpass.getuser()}\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it takes connections; AssertionError with its log when it cannot."""
        if not Path(MOSQUITTO).exists():
            raise AssertionError(f"mosquitto not found at {MOSQUITTO}: apt-get install mosquitto")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited ({self.proc.returncode}): {self._tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen on 127.0.0.1:{self.port} in 10 s: {self._tail()}")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file on the way out) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def _tail(self) -> str:
        err = self.proc.stderr.read().decode(errors="replace") if self.proc and self.proc.stderr else ""
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return (err + log).strip() or "(no output)"


@dataclass
class Heard:
    """A packet from the bot as a handset behind a downlinking gateway would get it."""

    packet: mesh_pb2.MeshPacket
    data: mesh_pb2.Data
    pki: bool
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return bytes(self.data.payload).decode("utf-8")


class Handset:
    """A Meshtastic node heard through gateways: it uplinks via `gateways` and hears what is downlinked."""

    def __init__(
        self,
        port: int,
        num: int,
        gateways: tuple[int, ...] = (0x6A7E0001,),
        auto_ack: bool = True,
        answers_nodeinfo: bool = False,
        client_name: str | None = None,
    ) -> None:
        self.num, self.gateways, self.auto_ack, self.answers_nodeinfo = num, gateways, auto_ack, answers_nodeinfo
        self.private = crypto.generate_private_key()
        self.public = crypto.public_key_of(self.private)
        self.bot_key: bytes | None = None
        self.bot_num: int | None = None
        self.heard: list[Heard] = []
        self.dropped: list[str] = []
        self.packets_from: Counter[int] = Counter()  # every envelope seen, by sender
        self._seen: set[tuple[int, int]] = set()  # the firmware drops a packet id it has seen
        self._lock = threading.Lock()
        # An impostor writing someone else's `from` needs a client id of its own on the broker.
        client_id = client_name or f"handset-{num:08x}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{ROOT}/2/e/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, clean_start=True)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def away(self) -> None:
        """Its gateway drops off the broker (a clean session: what is published meanwhile never reaches it)."""
        self.close()

    def back(self) -> None:
        """Its gateway connects again and subscribes anew."""
        self.client.reconnect()
        self.client.loop_start()

    # -- uplink ----------------------------------------------------------------------------------------
    def publish(
        self, packet: mesh_pb2.MeshPacket, channel_id: str, gateways: tuple[int, ...] | None = None, wait: bool = True
    ) -> None:
        """What each gateway that heard `packet` on air publishes (the same packet, its own gateway id)."""
        for gw in gateways or self.gateways:
            info = self.client.publish(codec.topic(ROOT, channel_id, gw), codec.envelope(packet, channel_id, gw), 1)
            if wait:  # never inside paho's own callback thread, which is the one that reads the PUBACK
                info.wait_for_publish(5)

    def announce(self) -> None:
        """Our NodeInfo with our public key, on the channel."""
        user = mesh_pb2.User(id=f"!{self.num:08x}", long_name=f"Handset {self.num:x}", short_name="HS")
        user.public_key = self.public
        data = codec.nodeinfo_data(user, want_response=False, ok_to_mqtt=True)
        self.publish(codec.seal_channel(Header(self.num, BROADCAST, new_id(), 3), data, LONGFAST), LONGFAST.name)

    def _announce_async(self) -> None:
        user = mesh_pb2.User(id=f"!{self.num:08x}", long_name=f"Handset {self.num:x}", short_name="HS")
        user.public_key = self.public
        data = codec.nodeinfo_data(user, want_response=False, ok_to_mqtt=True)
        packet = codec.seal_channel(Header(self.num, BROADCAST, new_id(), 3), data, LONGFAST)
        self.publish(packet, LONGFAST.name, wait=False)

    def dm(self, text: str, packet_id: int | None = None, gateways: tuple[int, ...] | None = None) -> int:
        """A PKI-encrypted text DM to the bot, as firmware 2.7.19 sends it."""
        assert self.bot_key is not None and self.bot_num is not None, "the bot's NodeInfo was never heard"
        pid = packet_id or new_id()
        head = Header(self.num, self.bot_num, pid, 3, want_ack=True)
        data = codec.text_data(text, None, ok_to_mqtt=True)
        self.publish(codec.seal_pki(head, data, self.private, self.bot_key), "PKI", gateways)
        return pid

    def legacy_dm(self, text: str) -> int:
        """A text DM encrypted with the channel key, as firmware before PKI (or without the bot's key) sends it."""
        assert self.bot_num is not None
        pid = new_id()
        data = codec.text_data(text, None, ok_to_mqtt=True)
        head = Header(self.num, self.bot_num, pid, 3, want_ack=True)
        self.publish(codec.seal_channel(head, data, LONGFAST), LONGFAST.name)
        return pid

    def say(self, text: str) -> int:
        """A channel broadcast."""
        pid = new_id()
        data = codec.text_data(text, None, ok_to_mqtt=True)
        self.publish(codec.seal_channel(Header(self.num, BROADCAST, pid, 3), data, LONGFAST), LONGFAST.name)
        return pid

    # -- downlink --------------------------------------------------------------------------------------
    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            packet, channel_id, _gw = codec.parse_envelope(msg.payload)
        except Dropped as drop:
            self.dropped.append(drop.detail)
            return
        sender = codec.sender_of(packet)
        self.packets_from[sender] += 1
        if sender == self.num or (sender, packet.id) in self._seen:
            return
        pki = codec.is_pki(packet, channel_id)
        try:
            if pki:
                if packet.to != self.num or self.bot_key is None:
                    return
                data = codec.open_pki(packet, self.private, self.bot_key)
            else:
                data = codec.open_channel(packet, LONGFAST)
        except Dropped as drop:
            self.dropped.append(drop.detail)
            return
        self._seen.add((sender, packet.id))
        if data.portnum == portnums_pb2.NODEINFO_APP:
            user = codec.parse_user(data)
            if user is not None and user.public_key and user.short_name != "HS":  # the bot, not another handset
                self.bot_key, self.bot_num = bytes(user.public_key), sender
            if data.want_response and packet.to == self.num and self.answers_nodeinfo:
                self._announce_async()
            return
        with self._lock:
            self.heard.append(Heard(packet, data, pki))
        if pki and packet.want_ack and self.auto_ack and self.bot_key is not None:
            # As the firmware seals an ACK: on the channel key, never PKI (Router.cpp perhapsEncode).
            ack = codec.seal_channel(Header(self.num, sender, new_id(), 3), codec.routing_data(packet.id), LONGFAST)
            self.publish(ack, LONGFAST.name, wait=False)

    def acks_for(self, packet_id: int) -> list[Heard]:
        """Routing packets (ACKs, NAKs) heard for one of our packets."""
        with self._lock:
            return [
                h for h in self.heard if h.data.portnum == portnums_pb2.ROUTING_APP and h.data.request_id == packet_id
            ]

    def texts(self, *, dm: bool | None = None) -> list[str]:
        """Texts heard from the bot, without its AI tag: DMs (dm=True), channel broadcasts (False) or both."""
        with self._lock:
            return [
                h.text.removeprefix(AI_TAG)
                for h in self.heard
                if h.data.portnum == portnums_pb2.TEXT_MESSAGE_APP and (dm is None or h.pki == dm)
            ]


def new_id() -> int:
    return 1 + int.from_bytes(crypto.generate_private_key()[:4], "little") % 0xFFFFFFFE


def mqtt_config(port: int, **overrides: object) -> Config:
    """A daemon config on the mqtt transport against the test broker, set through the acceptance env names."""
    base: dict[str, object] = {
        "radio.transport": "mqtt",
        "mqtt.port": port,
        "mesh.min_gap_s": 2.0,
        "mesh.ack_timeout_s": 10.0,
        "mqtt.key_wait_s": 2.0,
        # The bot sits on LongFast with the default key: the mesh's public channel, answered only when enabled.
        "policy.channels": [{"index": 0, "public": True}],
    }
    base.update(overrides)
    return load_config(
        overrides=base,
        environ={"MESHBOT_MQTT_HOST": "127.0.0.1", "MESHBOT_MQTT_ROOT": ROOT, "MESHBOT_MQTT_CHANNEL": "LongFast"},
    )
