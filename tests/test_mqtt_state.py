"""The mqtt transport's per-node state stays bounded and expires, and learnt keys survive a restart."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from meshbot.core.clock import VirtualClock
from meshbot.radios.mqtt import crypto
from meshbot.radios.mqtt.identity import Keyring
from meshbot.radios.mqtt.state import BoundedTTL, Retransmits
from meshbot.storage.keys import KeyStore
from meshbot.storage.store import Store

ops = st.lists(st.tuples(st.integers(0, 50), st.floats(0, 5)), max_size=200)


@given(ops=ops, bound=st.integers(1, 20))
def test_a_table_never_holds_more_than_its_bound_and_reports_each_forgotten_entry_once(
    ops: list[tuple[int, float]], bound: int
) -> None:
    clock = VirtualClock(0.0)
    dropped: list[int] = []
    table: BoundedTTL[int, int] = BoundedTTL(bound, 10.0, clock.now, on_drop=lambda k, v: dropped.append(v))
    written, replaced = 0, []
    for key, step in ops:
        clock.advance(step)
        written += 1
        previous = table.get(key)
        if previous is not None:
            replaced.append(previous)  # a key written again replaces its entry silently
        table.put(key, written)  # the value is unique per write
        assert len(table) <= bound
    clock.advance(11.0)
    table.expire()
    assert len(table) == 0
    # every write was either replaced by a newer one or reported forgotten, exactly once
    assert sorted(replaced + dropped) == list(range(1, written + 1))


def test_entries_expire_after_their_ttl() -> None:
    clock = VirtualClock(0.0)
    table: BoundedTTL[str, int] = BoundedTTL(10, 5.0, clock.now)
    assert table.add_new("a", 1) and not table.add_new("a", 2)
    clock.advance(6.0)
    assert table.get("a") is None and table.add_new("a", 3)


def test_learnt_keys_survive_a_restart_bounded_and_expiring(tmp_path: Path) -> None:
    clock, wall = VirtualClock(0.0), VirtualClock(1_000_000.0)
    store = Store(tmp_path / "k.db")
    ring = Keyring(KeyStore(store), max_nodes=3, ttl_s=100.0, clock=clock.now, wall=wall.now)
    keys = {n: crypto.public_key_of(crypto.generate_private_key()) for n in range(1, 6)}
    for node, key in keys.items():
        wall.advance(1.0)
        ring.learn(node, key)
    assert len(ring) == 3 and KeyStore(store).count() == 3  # the least recently heard went first
    again = Keyring(KeyStore(store), max_nodes=3, ttl_s=100.0, clock=clock.now, wall=wall.now)
    assert [again.get(n) for n in range(1, 6)] == [None, None, keys[3], keys[4], keys[5]]
    wall.advance(200.0)
    expired = Keyring(KeyStore(store), max_nodes=3, ttl_s=100.0, clock=clock.now, wall=wall.now)
    assert len(expired) == 0 and KeyStore(store).count() == 0
    store.close()


def test_a_key_of_the_wrong_size_is_not_learnt(tmp_path: Path) -> None:
    clock = VirtualClock(0.0)
    store = Store(tmp_path / "k.db")
    ring = Keyring(KeyStore(store), max_nodes=3, ttl_s=100.0, clock=clock.now, wall=clock.now)
    assert not ring.learn(7, b"short")
    assert ring.get(7) is None
    store.close()


def test_an_unanswered_dm_goes_out_as_many_times_as_the_firmware_sends_one_and_an_ack_stops_it() -> None:
    clock = VirtualClock(0.0)
    copies = Retransmits(interval_s=4.0, transmissions=3, clock=clock.now)
    copies.track(7, "msh/US/2/e/PKI/!0bb00001", b"seven")
    copies.track(8, "msh/US/2/e/PKI/!0bb00001", b"eight")
    assert copies.due() == []  # the first copy just went out
    clock.advance(4.0)
    assert sorted(pid for pid, _, _ in copies.due()) == [7, 8]  # the second copy, same packet
    copies.forget(8)  # its ACK came
    clock.advance(4.0)
    assert [(pid, payload) for pid, _, payload in copies.due()] == [(7, b"seven")]  # the third and last
    clock.advance(40.0)
    assert copies.due() == [] and len(copies) == 0
