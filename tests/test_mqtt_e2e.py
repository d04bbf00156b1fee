"""End to end through a real mosquitto: handsets behind MQTT gateways ask, the daemon on the `mqtt`
transport answers, PKI-encrypted for DMs, on the channel for `!ai`, once however many gateways uplink."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core import limits
from meshbot.core.config import Config, load_config
from meshbot.core.fragmenter import strip_numbering
from meshbot.radios.mqtt.transport import MqttRadio
from meshbot.radios.protobufs import portnums_pb2
from meshbot.service.daemon import Daemon
from meshbot.storage.store import Store
from tests.conftest import wait_until
from tests.fakes import AI_TAG, FakeModel
from tests.mqtt_support import ROOT, Broker, Handset, mqtt_config

ALICE, BOB = 0x0A11CE00, 0x0B0B0000
GW1, GW2 = 0x6A7E0001, 0x6A7E0002
LONG_ANSWER = (
    "LoRa is a long range radio modulation that trades speed for reach. It spreads each symbol over a wide "
    "chirp so a receiver can pick it out below the noise floor. Meshtastic uses it to relay short texts "
    "between handsets for many kilometres. Every packet is flooded by relays until its hop limit runs out."
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()  # fails the test, with mosquitto's log, when it cannot start
    yield b
    b.stop()


@pytest.fixture
def handsets(broker: Broker) -> Iterator[Callable[..., Handset]]:
    made: list[Handset] = []

    def make(num: int, gateways: tuple[int, ...] = (GW1,), **kw: object) -> Handset:
        h = Handset(broker.port, num, gateways, **kw)  # type: ignore[arg-type]
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


class Bots:
    """Daemons on the mqtt transport, each with a FakeModel, sharing one store file (one identity)."""

    def __init__(self, port: int, db: Path) -> None:
        self.port, self.db = port, db
        self.running: list[Daemon] = []

    def __call__(self, *answers: str, **overrides: object) -> tuple[Daemon, FakeModel]:
        model = FakeModel().queue(*answers)  # queued before start: a backlog may be answered at once
        daemon = build_daemon(mqtt_config(self.port, **overrides), model=model, store=Store(self.db))
        daemon.start()
        self.running.append(daemon)
        return daemon, model

    def stop(self, daemon: Daemon) -> None:
        self.running.remove(daemon)
        daemon.stop(grace_s=2.0)


@pytest.fixture
def bot(broker: Broker, tmp_path: Path) -> Iterator[Bots]:
    bots = Bots(broker.port, tmp_path / "bot.db")
    yield bots
    for daemon in list(bots.running):
        bots.stop(daemon)


def meet(handset: Handset) -> None:
    """The handset hears the bot's NodeInfo (sent at connect), and announces its own."""
    wait_until(lambda: handset.bot_key is not None, timeout=10)
    handset.announce()


def answer_of(handset: Handset, dm: bool, timeout: float = 40.0) -> list[str]:
    """The fragments of one whole answer, waiting for the final `k/k` (or an unnumbered single one)."""

    def complete() -> bool:
        texts = handset.texts(dm=dm)
        return bool(texts) and (texts[-1].split(" ", 1)[0] in {f"{len(texts)}/{len(texts)}"} or "/" not in texts[0][:4])

    wait_until(complete, timeout=timeout)
    return handset.texts(dm=dm)


def assert_in_order(fragments: list[str], answer: str) -> None:
    assert len(fragments) >= 2
    for i, text in enumerate(fragments[:-1], start=1):
        assert text.startswith(f"{i}/+ ")
    assert fragments[-1].startswith(f"{len(fragments)}/{len(fragments)} ")
    assert " ".join(strip_numbering(f) for f in fragments).split() == answer.split()


def test_a_dm_is_answered_pki_encrypted_in_order_within_the_byte_budget(bot, handsets) -> None:
    alice = handsets(ALICE)
    daemon, model = bot()
    meet(alice)
    model.queue(LONG_ANSWER)
    alice.dm("what is lora?")
    fragments = answer_of(alice, dm=True)
    assert_in_order(fragments, LONG_ANSWER)
    for heard in alice.heard:
        if heard.data.portnum == portnums_pb2.ROUTING_APP:  # the ACK of her DM: never PKI, as the firmware seals it
            assert not heard.pki and heard.packet.channel == 8  # LongFast's hash
            continue
        assert heard.text.startswith(AI_TAG)  # labelled
        assert heard.pki and heard.packet.channel == 0 and heard.packet.pki_encrypted
        assert len(heard.text.encode()) <= limits.APP_TEXT_LIMIT_BYTES
        assert len(heard.packet.encrypted) <= limits.DATA_PAYLOAD_LEN  # what goes on air fits one packet
    assert alice.texts(dm=False) == []  # nothing of a DM leaks onto the channel


def test_the_same_packet_uplinked_by_two_gateways_is_answered_once(bot, handsets) -> None:
    alice = handsets(ALICE, gateways=(GW1, GW2))
    daemon, model = bot()
    meet(alice)
    model.queue("Yes, once.")
    alice.dm("are you there?")  # published twice, by both gateways
    wait_until(lambda: alice.texts(dm=True) == ["Yes, once."], timeout=20)
    time.sleep(3.0)  # a second answer, if any, would have left by now (min gap 2 s)
    assert alice.texts(dm=True) == ["Yes, once."]
    assert len(model.requests) == 1


def test_a_channel_ai_question_is_answered_on_the_channel(bot, handsets) -> None:
    bob = handsets(BOB)
    daemon, model = bot()
    wait_until(lambda: bob.bot_key is not None, timeout=10)
    model.queue("Hello from the bot.")
    bob.say("!ai say hello")
    wait_until(lambda: bob.texts(dm=False) == ["Hello from the bot."], timeout=20)
    heard = next(h for h in bob.heard if not h.pki)
    assert heard.packet.to == 0xFFFFFFFF and heard.packet.channel == 8  # LongFast's hash, channel-encrypted
    assert heard.data.bitfield & 1  # OK to MQTT, as the firmware sets it
    bob.say("just chatting, not for the bot")
    time.sleep(1.0)
    assert len(model.requests) == 1


def test_a_broker_restart_mid_run_loses_no_accepted_question(bot, handsets, broker, caplog) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    alice = handsets(ALICE)
    daemon, model = bot(**{"mqtt.max_backoff_s": 2.0})
    meet(alice)
    model.queue(LONG_ANSWER, "Second answer.")
    alice.dm("what is lora?")
    wait_until(lambda: len(alice.texts(dm=True)) >= 1, timeout=20)
    broker.stop()  # mid-answer: the rest of the fragments wait for the broker
    time.sleep(1.0)
    broker.start()  # same port, same persistence file: the bot's session (and its queue) survives
    wait_until(lambda: alice.client.is_connected(), timeout=15)
    alice.dm("and a second question?")
    wait_until(lambda: "Second answer." in alice.texts(dm=True), timeout=60)
    texts = alice.texts(dm=True)
    assert_in_order(texts[:-1], LONG_ANSWER)  # every fragment of the first answer, once, in order
    assert texts[-1] == "Second answer."
    assert len(model.requests) == 2
    assert any("session resumed" in r.getMessage() for r in caplog.records)  # the broker kept our session


def test_a_fragment_published_while_the_askers_gateway_is_away_reaches_it_once_it_is_back(
    bot, handsets, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="meshbot")
    alice = handsets(ALICE)
    daemon, model = bot()
    meet(alice)
    model.queue(LONG_ANSWER)
    alice.dm("what is lora?")
    wait_until(lambda: any(r.getMessage().startswith("acked q1 1/+") for r in caplog.records), timeout=20)
    alice.away()  # her gateway is off the broker when fragment 2 is published
    wait_until(lambda: any(r.getMessage().startswith("sent q1 2/2") for r in caplog.records), timeout=20)
    time.sleep(0.5)
    alice.back()
    fragments = answer_of(alice, dm=True, timeout=20)  # a copy with the same packet id comes before the ACK wait ends
    assert_in_order(fragments, LONG_ANSWER)  # every fragment once, in order: the copies she heard are dropped
    assert any(getattr(r, "event", None) == "retransmitted" for r in caplog.records)
    wait_until(lambda: any(r.getMessage().startswith("acked q1 2/2") for r in caplog.records), timeout=10)


def test_a_question_sent_while_the_bot_is_away_is_answered_when_it_returns(bot, handsets, caplog) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    alice = handsets(ALICE)
    daemon, _ = bot()
    meet(alice)
    wait_until(lambda: any(getattr(r, "event", "") == "key-learnt" for r in caplog.records), timeout=10)
    bot.stop(daemon)  # the broker keeps the bot's session: its subscriptions and a QoS 1 backlog
    alice.dm("anyone home?")
    bot("Back now.")  # same store: same node id and client id, so the same session
    wait_until(lambda: alice.texts(dm=True) == ["Back now."], timeout=20)
    assert any("session resumed" in r.getMessage() for r in caplog.records)


def test_a_dm_from_a_node_whose_key_never_comes_is_dropped_with_a_reason(bot, handsets, caplog) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    carol = handsets(0x0CA201E0)
    daemon, model = bot()
    wait_until(lambda: carol.bot_key is not None, timeout=10)
    carol.dm("hello?")  # PKI, but carol never announced her key: the bot cannot open it
    wait_until(lambda: any(getattr(r, "reason", "") == "no-pubkey" for r in caplog.records), timeout=10)
    assert model.requests == [] and carol.texts() == []


def test_identity_is_generated_once_and_kept_in_the_store(broker, tmp_path) -> None:
    from meshbot.core.clock import SystemClock

    store = Store(tmp_path / "id.db")
    first = MqttRadio(mqtt_config(broker.port), store, SystemClock()).identity
    again = MqttRadio(mqtt_config(broker.port), store, SystemClock()).identity
    assert (first.node_num, first.public_key) == (again.node_num, again.public_key)
    assert "private" not in repr(first).lower() or first.private_key.hex() not in repr(first)
    store.close()


def test_a_legacy_dm_with_the_option_on_waits_for_the_askers_nodeinfo_then_is_answered_pki(bot, handsets) -> None:
    # Was "a legacy DM ... is answered PKI" with the default config: legacy DMs are now refused unless the
    # operator accepts them (issue 17); with the option on, the answer still goes only by PKI DM.
    dave = handsets(0x0DA7E000, answers_nodeinfo=True)
    _, model = bot(**{"radio.accept_legacy_dms": True})
    wait_until(lambda: dave.bot_key is not None, timeout=10)
    model.queue("Answered privately.")
    dave.legacy_dm("hi bot")  # channel-key DM: the bot cannot answer that way, and does not know dave's key
    wait_until(lambda: dave.texts() == ["Answered privately."], timeout=20)
    assert dave.heard[-1].pki  # the bot asked for dave's NodeInfo, learnt the key and answered PKI


def test_the_channel_fallback_for_an_unknown_key_is_an_explicit_option(bot, handsets, caplog) -> None:
    # Was the default whenever policy answered channel 0 (issue 17: a private question answered in public).
    caplog.set_level(logging.INFO, logger="meshbot")
    erin = handsets(0x0E2100E0)  # never answers a NodeInfo request
    _, model = bot(**{"radio.accept_legacy_dms": True, "mqtt.dm_fallback_to_channel": True})
    wait_until(lambda: erin.bot_key is not None, timeout=10)
    model.queue("On the channel then.")
    erin.legacy_dm("hi bot")
    wait_until(lambda: erin.texts(dm=False) == ["On the channel then."], timeout=20)
    assert erin.texts(dm=True) == []
    assert any(getattr(r, "event", "") == "dm-on-channel" for r in caplog.records)


def test_a_dm_to_an_unknown_key_is_dropped_with_a_reason_never_answered_on_the_channel(bot, handsets, caplog) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    erin = handsets(0x0E2100E0)
    _, model = bot(**{"radio.accept_legacy_dms": True})  # the public channel is answered, yet not for a DM
    wait_until(lambda: erin.bot_key is not None, timeout=10)
    model.queue("Nobody hears this.")
    erin.legacy_dm("hi bot")
    wait_until(lambda: any(getattr(r, "reason", "") == "no-pubkey" for r in caplog.records), timeout=20)
    time.sleep(0.5)
    assert erin.texts() == []


def test_garbage_wrong_keys_truncation_and_unknown_ports_each_get_one_line_and_the_bot_answers_on(
    bot, handsets, caplog
) -> None:
    from meshtastic.protobuf import mesh_pb2

    from meshbot.radios.mqtt import codec
    from meshbot.radios.mqtt.codec import Channel, Header
    from tests.mqtt_support import LONGFAST, new_id

    caplog.set_level(logging.INFO, logger="meshbot")
    alice = handsets(ALICE)
    _, model = bot()
    meet(alice)
    wait_until(lambda: any(getattr(r, "event", "") == "key-learnt" for r in caplog.records), timeout=10)
    topic = f"{ROOT}/2/e/LongFast/!6a7e0001"
    alice.client.publish(topic, b"\x00\xffnot a protobuf", 1).wait_for_publish(5)  # garbage
    other = Channel("LongFast", bytes(range(16)))  # the right name, another key
    alice.publish(
        codec.seal_channel(Header(ALICE, 0xFFFFFFFF, new_id(), 3), codec.text_data("x", None, True), other), "LongFast"
    )
    truncated = mesh_pb2.MeshPacket(to=0, id=new_id(), encrypted=b"\x01\x02\x03", pki_encrypted=True)
    assert alice.bot_num is not None
    truncated.to = alice.bot_num
    setattr(truncated, "from", ALICE)
    alice.publish(truncated, "PKI")
    odd = mesh_pb2.Data(portnum=999, payload=b"?")  # type: ignore[arg-type]
    alice.publish(codec.seal_channel(Header(ALICE, 0xFFFFFFFF, new_id(), 3), odd, LONGFAST), "LongFast")
    model.queue("Still here.")
    alice.dm("still there?")
    wait_until(lambda: alice.texts(dm=True) == ["Still here."], timeout=20)
    reasons = [getattr(r, "reason", None) for r in caplog.records if getattr(r, "event", "") == "ignored"]
    for reason in ("garbage", "undecryptable", "unknown-port"):
        assert reasons.count(reason) >= 1, reasons
    assert reasons.count("undecryptable") == 2  # the wrong channel key and the truncated PKI packet
    assert len(reasons) == 4


def test_a_pki_dm_from_an_unknown_sender_is_held_until_their_nodeinfo_arrives(bot, handsets) -> None:
    frank = handsets(0x0F2A0000, answers_nodeinfo=True)
    _, model = bot()
    wait_until(lambda: frank.bot_key is not None, timeout=10)
    model.queue("Held, then answered.")
    frank.dm("did you get this?")  # the bot cannot open it yet: it holds it and asks for frank's NodeInfo
    wait_until(lambda: frank.texts(dm=True) == ["Held, then answered."], timeout=20)


def test_the_bot_keeps_trying_until_the_broker_is_there(bot, handsets, broker, caplog) -> None:
    import threading

    caplog.set_level(logging.INFO, logger="meshbot")
    broker.stop()
    started: list[Daemon] = []
    starter = threading.Thread(target=lambda: started.append(bot(**{"mqtt.max_backoff_s": 1.0})[0]), daemon=True)
    starter.start()
    wait_until(lambda: sum(getattr(r, "event", "") == "radio-retry" for r in caplog.records) >= 2, timeout=20)
    assert not started  # still connecting, not failed
    broker.start()
    starter.join(timeout=20)
    assert started, "the bot never connected once the broker came up"
