"""The radio boundary against the virtual node, through the real meshtastic TCPInterface."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import pytest

from meshbot.core.config import RadioConfig
from meshbot.core.domain import AckStatus, Inbound, Outbound, RadioEvent, SendResult
from meshbot.radios.meshtastic_lib import MeshtasticRadio
from meshbot.sim.node.node import VirtualNode
from meshbot.sim.rules.inject import build_text_packet
from tests.conftest import wait_until

BOT = 0x0BB0_0001
ALICE = 0x0A11_CE00


@pytest.fixture
def node() -> Iterator[VirtualNode]:
    with VirtualNode(
        BOT, short_name="BOT", modem_preset="MEDIUM_FAST", region="EU_868", peers=[(ALICE, "Alice", "ALI")]
    ) as vnode:
        yield vnode


@pytest.fixture
def link(node: VirtualNode) -> Iterator[tuple[MeshtasticRadio, queue.Queue[Inbound | RadioEvent]]]:
    inbox: queue.Queue[Inbound | RadioEvent] = queue.Queue()
    radio = MeshtasticRadio(RadioConfig(host=f"127.0.0.1:{node.port}", connect_timeout_s=10), backoff_s=(0.2, 1.0))
    radio.start(inbox.put, inbox.put)
    yield radio, inbox
    radio.close()


def next_packet(inbox: queue.Queue[Inbound | RadioEvent]) -> Inbound:
    """The next packet, skipping connection events."""
    while True:
        item = inbox.get(timeout=5)
        if isinstance(item, Inbound):
            return item


def test_it_reads_the_node_and_its_lora_settings(link) -> None:
    radio, _ = link
    me = radio.local_node()
    assert (me.node_num, me.short_name, me.modem_preset, me.region) == (BOT, "BOT", "MEDIUM_FAST", "EU_868")


def test_a_dm_arrives_parsed(node: VirtualNode, link) -> None:
    _, inbox = link
    node.inject_text(ALICE, "привет, бот", packet_id=55, hop_start=3, hop_limit=1)
    msg = next_packet(inbox)
    assert (msg.sender, msg.packet_id, msg.text, msg.is_dm, msg.hops) == (ALICE, 55, "привет, бот", True, 2)


def test_a_sent_dm_is_acked_and_a_too_large_one_naked(node: VirtualNode, link) -> None:
    radio, _ = link
    results: queue.Queue[SendResult] = queue.Queue()
    packet_id = radio.send(Outbound("hello", ALICE, want_ack=True), results.put)
    result = results.get(timeout=5)
    assert result.packet_id == packet_id and result.status is AckStatus.ACKED
    node.wait_for_sent(1, timeout=5)
    # 221 bytes is over the PKI DM ceiling (mesh-facts: 220), the firmware refuses it.
    radio.send(Outbound("x" * 221, ALICE, want_ack=True), results.put)
    refused = results.get(timeout=10)
    assert refused.status is AckStatus.NAKED and refused.reason in {"TOO_LARGE", "RATE_LIMIT_EXCEEDED"}


def test_it_reconnects_after_the_link_drops(node: VirtualNode, link) -> None:
    radio, inbox = link
    wait_until(lambda: node.client_connected, timeout=5)
    node.wait_for_handshakes(1, timeout=5)
    threading.Event().wait(0.5)  # let the library finish its first heartbeat (see VirtualNode notes)
    node.drop_client(reset=True)
    assert inbox.get(timeout=5) is RadioEvent.CONNECTED  # the first connect
    assert inbox.get(timeout=10) is RadioEvent.LOST
    assert inbox.get(timeout=20) is RadioEvent.CONNECTED
    assert node.handshakes >= 2
    node.inject_text(ALICE, "still there?", packet_id=77)
    assert next_packet(inbox).text == "still there?"


def test_an_ack_held_while_the_link_was_down_reaches_its_send_after_the_reconnect() -> None:
    # The node keeps what it hears while no client listens, and hands it to the next one: an ACK
    # for a text sent on the old link must still end that send, not wait out the ACK timeout.
    with VirtualNode(BOT, short_name="BOT", peers=[(ALICE, "Alice", "ALI")], ack_delay_s=1.5) as node:
        events: queue.Queue[Inbound | RadioEvent] = queue.Queue()
        radio = MeshtasticRadio(RadioConfig(host=f"127.0.0.1:{node.port}", connect_timeout_s=10), backoff_s=(0.2, 1.0))
        radio.start(events.put, events.put)
        try:
            node.wait_for_handshakes(1, timeout=5)
            threading.Event().wait(0.5)  # let the library finish its first heartbeat
            results: queue.Queue[SendResult] = queue.Queue()
            packet_id = radio.send(Outbound("hello", ALICE, want_ack=True), results.put)
            wait_until(lambda: len(node.sent) == 1, timeout=5)  # on air, its ACK 1.5 s away
            node.drop_client(reset=True)
            result = results.get(timeout=20)
            assert (result.packet_id, result.status) == (packet_id, AckStatus.ACKED)
            node.wait_for_handshakes(2, timeout=5)  # and it came over the new link
        finally:
            radio.close()


@pytest.mark.parametrize("port", ["TELEMETRY_APP", "POSITION_APP", "NODEINFO_APP"])
def test_a_corrupt_payload_is_one_info_line_not_a_traceback(
    node: VirtualNode, link, port: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    _, inbox = link
    corrupt = build_text_packet(sender=ALICE, to=0xFFFFFFFF, text=b"\xff\xff\xff\x08\x96", packet_id=4242, portnum=port)
    node.inject_packet(corrupt)
    node.inject_text(ALICE, "still here?", packet_id=4243)  # and the link goes on as before
    assert next_packet(inbox).text == "still here?"
    shown = [r for r in caplog.records if r.levelno >= logging.INFO]  # what a default log level shows
    about = [r for r in shown if "4242" in r.getMessage() or "corrupt" in r.getMessage()]
    (line,) = about
    assert line.levelno == logging.INFO and (line.event, line.reason) == ("ignored", "malformed")
    assert line.getMessage().startswith(f"ignored {port} from !0a11ce00 (id 4242): malformed")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in capfd.readouterr().err


def test_the_librarys_other_logging_is_left_as_it_is(node: VirtualNode, link, caplog) -> None:
    # A dropped link is still the library's own ERROR line: the guard only rewords undecodable payloads.
    caplog.set_level(logging.INFO)
    radio, inbox = link
    node.drop_client(reset=True)
    wait_until(lambda: any(r.name.startswith("meshtastic") and r.levelno == logging.ERROR for r in caplog.records))
