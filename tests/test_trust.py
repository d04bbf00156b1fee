"""Who is asking: the pure rules (core/trust.py), key pins in both stores, `meshbot keys` and the config's admins."""

from __future__ import annotations

import base64
import io
import time
from argparse import Namespace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbot.app.keys import cmd_keys
from meshbot.cluster.keys import SharedKeys
from meshbot.cluster.shared import Shared
from meshbot.core.clock import VirtualClock
from meshbot.core.config import ClusterConfig, ConfigError, load_config
from meshbot.core.ids import node_id
from meshbot.core.trust import UNPROVEN_DM, admins_of, conversation_of, is_admin, remainder_slot
from meshbot.radios.mqtt.identity import KeyBackend, Keyring
from meshbot.storage.keys import KeyStore
from meshbot.storage.store import Store
from tests.daemon_proc import write_config
from tests.fakes import ALICE, BOB, broadcast, dm
from tests.redis_support import RedisServer

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


# -- the rules -------------------------------------------------------------------------------------------------
def test_only_a_pki_dm_is_proven_and_an_unproven_dm_has_a_conversation_of_its_own() -> None:
    assert conversation_of(dm("hi")) == (ALICE, None)
    assert conversation_of(dm("hi", pki=False)) == (ALICE, UNPROVEN_DM)
    assert conversation_of(broadcast("hi", channel=2)) == (ALICE, 2)


nodes = st.integers(1, 0xFFFFFFFE)
messages = st.one_of(
    st.builds(lambda n, pki: dm("q", sender=n, pki=pki), nodes, st.booleans()),
    st.builds(lambda n, ch: broadcast("q", sender=n, channel=ch), nodes, st.integers(0, 7)),
)


@given(messages, messages)
def test_remainder_slots_are_the_same_only_for_the_same_conversation(a, b) -> None:
    # A channel "more" under someone's id must never take the rest of their private answer.
    assert (remainder_slot(a) == remainder_slot(b)) == (conversation_of(a) == conversation_of(b))


def test_an_admin_must_be_proven_and_have_the_pinned_key_when_one_is_configured() -> None:
    admins = admins_of((node_id(ALICE), f"{node_id(BOB)}:{base64.b64encode(KEY_A).decode()}"))
    assert is_admin(dm("!pause"), admins)
    assert not is_admin(dm("!pause", pki=False), admins)
    assert not is_admin(broadcast("!pause"), admins)
    assert is_admin(dm("!pause", sender=BOB, sender_key=KEY_A), admins)
    assert not is_admin(dm("!pause", sender=BOB, sender_key=KEY_B), admins)
    assert not is_admin(dm("!pause", sender=BOB), admins)  # a transport that cannot say the key: not proven


@pytest.mark.parametrize(
    "entry, complaint",
    [("!zz", "bad node id"), ("!0a11ce00:not-base64!", "not base64"), ("!0a11ce00:AQ==", "32 bytes")],
)
def test_a_bad_admin_entry_is_a_config_error_naming_it(entry: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_config(overrides={"limits.admins": [entry]}, environ={})


# -- pins ----------------------------------------------------------------------------------------------------------
def ring(keys: KeyBackend, clock: VirtualClock) -> Keyring:
    return Keyring(keys, max_nodes=100, ttl_s=3600.0, clock=clock.now, wall=clock.now)


def check_pinning(one: KeyBackend, two: KeyBackend) -> None:
    clock = VirtualClock(1_000_000.0)
    first, second = ring(one, clock), ring(two, clock)
    assert first.learn(ALICE, KEY_A)
    assert not second.learn(ALICE, KEY_B)  # another worker, or a restart: the first key stays
    assert second.get(ALICE) == KEY_A and ring(two, clock).get(ALICE) == KEY_A
    assert second.forget(ALICE)
    assert first.learn(ALICE, KEY_B)  # forgotten on purpose: the next key is pinned, on every worker
    assert second.get(ALICE) == KEY_B
    clock.advance(3601.0)
    assert ring(one, clock).learn(ALICE, KEY_A)  # a pin not heard for key_ttl is gone


def test_keys_are_pinned_on_first_use_across_restarts(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    check_pinning(KeyStore(store), KeyStore(store))
    store.close()


def test_keys_are_pinned_on_first_use_across_workers(redis_server: RedisServer) -> None:
    shared = [Shared(ClusterConfig(redis_url=redis_server.url, worker_id=w)) for w in "ab"]
    check_pinning(SharedKeys(shared[0]), SharedKeys(shared[1]))
    for s in shared:
        s.close()


def test_meshbot_keys_lists_and_forgets_a_pin(tmp_path: Path, capsys) -> None:
    store = Store(tmp_path / "bot.db")
    KeyStore(store).pin(ALICE, KEY_A, time.time(), 100, 3600.0)
    store.close()
    config = write_config(tmp_path / "meshbot.toml", {"store": {"path": str(tmp_path / "bot.db")}})
    out = io.StringIO()
    assert cmd_keys(Namespace(keys_command="list", config=config), out) == 0
    assert out.getvalue().startswith(f"{node_id(ALICE)}  {base64.b64encode(KEY_A).decode()}  heard 0.0 h ago")
    out = io.StringIO()
    assert cmd_keys(Namespace(keys_command="forget", node=node_id(ALICE), config=config), out) == 0
    assert cmd_keys(Namespace(keys_command="forget", node=node_id(ALICE), config=config), out) == 1
    assert out.getvalue().splitlines() == [
        f"forgot the key of {node_id(ALICE)}: its next NodeInfo is pinned",
        f"no key pinned for {node_id(ALICE)}",
    ]
    assert cmd_keys(Namespace(keys_command="forget", node="!nope", config=config), out) == 2


def test_a_resumed_question_keeps_whether_its_sender_was_proven(tmp_path: Path) -> None:
    from meshbot.core.policy import Accept, Kind
    from meshbot.service.ledger import resumed_query

    store = Store(tmp_path / "q.db")
    ask = Accept(Kind.ASK, "q", ALICE, 0, True)
    proven = store.add_query(dm("q"), ask, seed=1)
    legacy = store.add_query(dm("q", pki=False, packet_id=2), ask, seed=1)
    store.close()
    store = Store(tmp_path / "q.db")  # a restart
    resumed = {q.query_id: resumed_query(q, 0.0) for q in store.unfinished()}
    assert resumed[proven].conversation == (ALICE, None)  # after a crash, still the person's own conversation
    assert resumed[legacy].conversation == (ALICE, UNPROVEN_DM)
    store.close()
