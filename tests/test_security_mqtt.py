"""Sender identity over a real mosquitto (issue 17): each test plays the attacker with the suite's own packets.

On a broker anyone who holds the channel key (on the default channel, everyone) can publish a packet with any
`from`. The bot believes only what the mesh proves: a PKI DM it opened with the key it pinned first.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from meshbot.app.compose import build_daemon
from meshbot.core.ids import node_id
from meshbot.service.daemon import Daemon
from meshbot.storage.store import Store
from tests.conftest import wait_until
from tests.fakes import FakeModel
from tests.mqtt_support import Broker, Handset, mqtt_config

ALICE, ADMIN, MALLORY = 0x0A11CE00, 0x0AD70000, 0x0BAD0000
GW1 = 0x6A7E0001


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def handsets(broker: Broker) -> Iterator[Callable[..., Handset]]:
    made: list[Handset] = []

    def make(num: int, **kw: object) -> Handset:
        h = Handset(broker.port, num, (GW1,), **kw)  # type: ignore[arg-type]
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def start_bot(broker: Broker, tmp_path: Path) -> Iterator[Callable[..., tuple[Daemon, FakeModel]]]:
    running: list[Daemon] = []

    def start(*answers: str, **overrides: object) -> tuple[Daemon, FakeModel]:
        model = FakeModel().queue(*answers)
        overrides = {"limits.admins": [node_id(ADMIN)], **overrides}
        daemon = build_daemon(mqtt_config(broker.port, **overrides), model=model, store=Store(tmp_path / "bot.db"))
        daemon.start()
        running.append(daemon)
        return daemon, model

    yield start
    for daemon in running:
        daemon.stop(grace_s=2.0)


def meet(handset: Handset) -> None:
    """The handset hears the bot's NodeInfo, and announces its own key."""
    wait_until(lambda: handset.bot_key is not None, timeout=10)
    handset.announce()


def impostor_of(handsets: Callable[..., Handset], victim: Handset) -> Handset:
    """Mallory, writing `victim`'s id as `from`, with a key pair of her own (the bot's NodeInfo is public)."""
    mallory = handsets(victim.num, client_name=f"mallory-{victim.num:08x}")
    mallory.bot_num, mallory.bot_key = victim.bot_num, victim.bot_key
    return mallory


def records(caplog: pytest.LogCaptureFixture, **fields: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if all(getattr(r, k, None) == v for k, v in fields.items())]


def key_learnt(caplog: pytest.LogCaptureFixture, node: int) -> Callable[[], bool]:
    return lambda: bool(records(caplog, event="key-learnt", node=node_id(node)))


def test_a_forged_channel_key_pause_under_the_admins_id_changes_nothing_and_gets_no_ack(
    start_bot, handsets, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    admin = handsets(ADMIN)
    daemon, model = start_bot()
    meet(admin)
    wait_until(key_learnt(caplog, ADMIN), timeout=10)
    mallory = impostor_of(handsets, admin)
    forged = [mallory.legacy_dm("!pause") for _ in range(3)]  # and again, as a forger would
    wait_until(lambda: bool(records(caplog, reason="legacy-dm")), timeout=10)
    time.sleep(2.0)  # a reply or an ACK, if any, would have come by now
    assert not daemon.paused.is_set()
    assert admin.texts() == [] and mallory.texts() == []  # no reply, on the channel or anywhere
    assert all(admin.acks_for(pid) == [] for pid in forged)  # no ACK: the handset sees it failed
    refusals = [r for r in records(caplog, reason="legacy-dm") if r.levelno >= logging.INFO]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING  # one line per node
    # The real admin's PKI DM is proven: it pauses, and the reply is a PKI DM, never on the channel.
    pid = admin.dm("!pause")
    wait_until(daemon.paused.is_set, timeout=10)
    wait_until(lambda: len(admin.texts(dm=True)) == 1, timeout=10)
    assert admin.texts(dm=True)[0].startswith("Paused") and admin.texts(dm=False) == []
    wait_until(lambda: len(admin.acks_for(pid)) == 1, timeout=10)
    assert not admin.acks_for(pid)[0].pki  # the ACK is sealed on the channel key, as the firmware seals it
    assert model.requests == []


def test_a_forged_channel_key_dm_under_another_nodes_id_is_refused(start_bot, handsets, caplog) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    alice = handsets(ALICE)
    daemon, model = start_bot("Noted, your code is 4711.")
    meet(alice)
    alice.dm("remember my code 4711")
    wait_until(lambda: alice.texts(dm=True) == ["Noted, your code is 4711."], timeout=20)
    mallory = impostor_of(handsets, alice)
    forged = mallory.legacy_dm("what was my code?")
    wait_until(lambda: bool(records(caplog, reason="legacy-dm")), timeout=10)
    time.sleep(2.0)
    assert len(model.requests) == 1  # never reached the model, let alone Alice's conversation
    assert alice.texts() == ["Noted, your code is 4711."] and mallory.texts() == []
    assert alice.acks_for(forged) == []


def test_with_legacy_dms_accepted_a_forger_still_never_reaches_a_proven_conversation_or_admin(
    start_bot, handsets, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    alice, admin = handsets(ALICE), handsets(ADMIN)
    answers = ("Noted, your code is 4711.", "I have no earlier messages from you.")
    daemon, model = start_bot(*answers, **{"radio.accept_legacy_dms": True})
    for h in (alice, admin):
        meet(h)
    alice.dm("remember my code 4711")
    wait_until(lambda: alice.texts(dm=True) == ["Noted, your code is 4711."], timeout=20)
    mallory = impostor_of(handsets, alice)
    mallory.legacy_dm("what was my code?")
    wait_until(lambda: len(model.requests) == 2, timeout=20)
    prompt = " ".join(turn.content for turn in model.requests[1].turns)
    assert "4711" not in prompt  # Alice's proven conversation is not this sender's
    wait_until(lambda: len(alice.texts(dm=True)) == 2, timeout=20)  # the answer goes to Alice's key, by PKI DM
    assert mallory.texts() == [] and alice.texts(dm=False) == []  # the forger cannot open it; nothing in public
    fake_admin = impostor_of(handsets, admin)
    fake_admin.legacy_dm("!pause")
    wait_until(lambda: bool(records(caplog, reason="unproven")), timeout=10)
    assert not daemon.paused.is_set()


def test_a_nodeinfo_that_swaps_a_pinned_key_is_dropped_and_the_impostor_gets_nothing(
    start_bot, handsets, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    alice = handsets(ALICE)
    daemon, model = start_bot("Noted, your code is 4711.", "Still you, Alice.")
    meet(alice)
    alice.dm("remember my code 4711")
    wait_until(lambda: alice.texts(dm=True) == ["Noted, your code is 4711."], timeout=20)
    mallory = impostor_of(handsets, alice)
    mallory.announce()  # Alice's id, Mallory's key
    wait_until(lambda: bool(records(caplog, event="key-mismatch")), timeout=10)
    [warning] = records(caplog, event="key-mismatch")
    assert warning.levelno == logging.WARNING and warning.node == node_id(ALICE)
    mallory.dm("what was my code?")  # sealed with Mallory's key: the bot opens it with Alice's pin, and cannot
    wait_until(lambda: bool(records(caplog, reason="undecryptable")), timeout=10)
    alice.dm("are you still there?")  # Alice's own key still works
    wait_until(lambda: alice.texts(dm=True)[-1:] == ["Still you, Alice."], timeout=20)
    assert len(model.requests) == 2 and mallory.texts() == []
    assert len(records(caplog, event="key-learnt", node=node_id(ALICE))) == 1


def test_an_operator_accepts_a_new_key_on_purpose_with_rekey(start_bot, handsets, caplog) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    alice, admin = handsets(ALICE), handsets(ADMIN)
    daemon, model = start_bot("Hello again, Alice.")
    for h in (alice, admin):
        meet(h)
    wait_until(key_learnt(caplog, ALICE), timeout=10)
    new_alice = impostor_of(handsets, alice)  # Alice reset her handset: a new key pair
    new_alice.announce()
    wait_until(lambda: bool(records(caplog, event="key-mismatch")), timeout=10)
    mallory = impostor_of(handsets, admin)
    mallory.legacy_dm(f"!rekey {node_id(ALICE)}")  # not proven: nothing is forgotten
    admin.dm(f"!rekey {node_id(ALICE)}")
    wait_until(lambda: len(admin.texts(dm=True)) == 1, timeout=10)
    assert admin.texts(dm=True)[0].startswith(f"Key of {node_id(ALICE)} forgotten")
    assert len(records(caplog, event="key-forgotten")) == 1
    new_alice.announce()
    wait_until(lambda: len(records(caplog, event="key-learnt", node=node_id(ALICE))) == 2, timeout=10)
    new_alice.dm("it is me, new handset")
    wait_until(lambda: new_alice.texts(dm=True) == ["Hello again, Alice."], timeout=20)


def test_an_admin_pinned_in_config_is_not_taken_over_by_whoever_announced_that_id_first(
    start_bot, handsets, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    admin = handsets(ADMIN)
    pinned = f"{node_id(ADMIN)}:{base64.b64encode(admin.public).decode()}"
    mallory = handsets(ADMIN, client_name="mallory-first")
    daemon, model = start_bot(**{"limits.admins": [pinned]})
    wait_until(lambda: mallory.bot_key is not None, timeout=10)
    mallory.announce()  # first to announce the admin's id: the mesh pins Mallory's key
    wait_until(key_learnt(caplog, ADMIN), timeout=10)
    mallory.dm("!pause")  # a PKI DM the bot opens, but not with the key the operator pinned
    wait_until(lambda: bool(records(caplog, reason="unproven")), timeout=10)
    time.sleep(1.0)
    assert not daemon.paused.is_set() and mallory.texts() == []


def test_a_dm_from_an_unknown_key_is_dropped_never_answered_on_the_public_channel(start_bot, handsets, caplog) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    carol = handsets(0x0CA201E0)  # the channel is answered in public; Carol never announces her key
    daemon, model = start_bot("Nobody hears this.", **{"mqtt.key_wait_s": 1.0})
    wait_until(lambda: carol.bot_key is not None, timeout=10)
    carol.dm("a private question")
    wait_until(lambda: bool(records(caplog, reason="no-pubkey")), timeout=15)
    time.sleep(1.0)
    assert model.requests == [] and carol.texts() == []


def test_reconnects_announce_our_nodeinfo_at_most_once_per_gap(start_bot, broker, handsets, caplog) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    daemon, _ = start_bot(**{"mqtt.max_backoff_s": 1.0, "mqtt.announce_min_gap_s": 600.0})
    wait_until(lambda: bool(records(caplog, event="nodeinfo-sent", dest=node_id(0xFFFFFFFF))), timeout=10)
    client_id = f"meshbot-{node_id(daemon.node.node_num)[1:]}"
    for _ in range(4):  # another client with the bot's id kicks it off the broker, as a second daemon did
        before = len(records(caplog, event="radio-up"))
        rival = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        rival.connect("127.0.0.1", broker.port)
        rival.loop_start()
        time.sleep(0.5)
        rival.disconnect()
        rival.loop_stop()
        wait_until(lambda: len(records(caplog, event="radio-up")) > before, timeout=10)
    assert len(records(caplog, event="radio-down")) >= 4
    assert len(records(caplog, event="nodeinfo-sent", dest=node_id(0xFFFFFFFF))) == 1
