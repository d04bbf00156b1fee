"""The virtual mesh with an MQTT gateway: the official `meshtastic` CLI on a handset asks a bot that has no
radio, through a virtual gateway, a real mosquitto and the `mqtt` transport, and gets its answer."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.limits import APP_TEXT_LIMIT_BYTES
from meshbot.service.daemon import Daemon
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.topology import parse_topology
from meshbot.storage.store import Store
from tests.conftest import wait_until
from tests.fakes import AI_TAG, FakeModel
from tests.mqtt_support import Broker, mqtt_config

ALICE, GW = 0x0A11CE00, 0x6A7E0001
TEXT = "TEXT_MESSAGE_APP"


def topology(
    port: int,
    *,
    alice_ok_to_mqtt: bool = True,
    alice_ignores_mqtt: bool = False,
    relay_ignores_mqtt: bool | None = None,
) -> dict:
    alice_to = "Gateway" if relay_ignores_mqtt is None else "Relay"
    relay = (
        [
            {
                "name": "Relay",
                "num": 0x0E1A0001,
                "role": "relay",
                "neighbours": ["Alice", "Gateway"],
                "ignore_mqtt": relay_ignores_mqtt,
            }
        ]
        if relay_ignores_mqtt is not None
        else []
    )
    return {
        "mesh": {
            "seed": 3,
            "modem_preset": "SHORT_FAST",
            "region": "US",
            "mqtt": {"host": "127.0.0.1", "port": port, "root": "msh/US", "channel": "LongFast"},
        },
        "nodes": [
            {
                "name": "Alice",
                "num": ALICE,
                "role": "handset",
                "neighbours": [alice_to],
                "ok_to_mqtt": alice_ok_to_mqtt,
                "ignore_mqtt": alice_ignores_mqtt,
            },
            {"name": "Gateway", "num": GW, "role": "relay", "mqtt": {"uplink": True, "downlink": True}},
            *relay,
        ],
    }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def start(broker: Broker, tmp_path: Path, **kw: bool) -> tuple[VirtualMesh, Daemon, FakeModel]:
    mesh = VirtualMesh(parse_topology(topology(broker.port, **kw)))
    mesh.start()
    assert mesh.settle(30), "the nodes never finished announcing themselves"
    model = FakeModel()
    daemon = build_daemon(
        mqtt_config(broker.port, **{"mqtt.key_wait_s": 20.0}), model=model, store=Store(tmp_path / "b.db")
    )
    daemon.start()
    return mesh, daemon, model


def meshtastic_cli(port: int, *args: str) -> subprocess.CompletedProcess:
    """The official CLI, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "meshtastic", "--host", f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_the_official_cli_asks_a_bot_with_no_radio_through_a_virtual_gateway(broker, tmp_path) -> None:
    mesh, daemon, model = start(broker, tmp_path)
    try:
        alice = mesh.node("Alice")
        bot_num = daemon.node.node_num
        wait_until(lambda: any(i.num == bot_num for i in alice.known_nodes()), timeout=20)  # the bot's NodeInfo
        model.queue(
            "LoRa is a long range radio modulation. Meshtastic relays short texts over it between handsets, "
            "and a gateway joins those handsets to an MQTT broker, where this bot listens without a radio. "
            "Its answers go back the same way, encrypted to the asker's public key, one packet per fragment."
        )
        sent = meshtastic_cli(alice.port, "--sendtext", "what is lora?", "--dest", f"!{bot_num:08x}", "--ack")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "Received an implicit ACK" in sent.stdout or "Received an ACK" in sent.stdout, sent.stdout

        def heard() -> list:
            return [h for h in alice.received if h.sender == bot_num and h.portnum == TEXT]

        def done() -> bool:
            last = heard()[-1].text.removeprefix(AI_TAG) if heard() else ""
            return last.startswith(f"{len(heard())}/{len(heard())} ")

        wait_until(done, timeout=60)
        assert all(h.text.startswith(AI_TAG) for h in heard())  # labelled as a machine's
        texts = [h.text.removeprefix(AI_TAG) for h in heard()]
        assert [t.split(" ", 1)[0] for t in texts] == [f"{i}/+" for i in range(1, len(texts))] + [
            f"{len(texts)}/{len(texts)}"
        ]
        for h in heard():
            assert h.to == ALICE and h.pki and len(h.payload) <= APP_TEXT_LIMIT_BYTES  # PKI, end to end
        assert len(model.requests) == 1  # Alice's retries and the gateway's copies reach the daemon once
    finally:
        daemon.stop(grace_s=2.0)
        mesh.stop()


def test_a_handset_that_ignores_mqtt_never_hears_the_bot(broker, tmp_path) -> None:
    mesh, daemon, model = start(broker, tmp_path, alice_ignores_mqtt=True)
    try:
        gateway = mesh.node("Gateway")
        bot_num = daemon.node.node_num
        wait_until(lambda: any(i.num == bot_num for i in gateway.known_nodes()), timeout=20)  # downlinked
        assert not any(i.num == bot_num for i in mesh.node("Alice").known_nodes())  # but dropped: via_mqtt
    finally:
        daemon.stop(grace_s=2.0)
        mesh.stop()


@pytest.mark.parametrize("ignores", [True, False])
def test_a_relay_that_ignores_mqtt_neither_shows_nor_relays_the_bot(broker, tmp_path, ignores: bool) -> None:
    mesh, daemon, _ = start(broker, tmp_path, relay_ignores_mqtt=ignores)
    try:
        bot_num = daemon.node.node_num
        wait_until(lambda: any(i.num == bot_num for i in mesh.node("Gateway").known_nodes()), timeout=20)

        def reached() -> bool:
            return any(i.num == bot_num for i in mesh.node("Alice").known_nodes())

        if ignores:
            time.sleep(3.0)  # the relay would have passed it on by now (SHORT_FAST, real time)
            assert not reached()
            assert not any(i.num == bot_num for i in mesh.node("Relay").known_nodes())
        else:
            wait_until(reached, timeout=20)  # the control: the same chain without ignore_mqtt carries it
    finally:
        daemon.stop(grace_s=2.0)
        mesh.stop()
