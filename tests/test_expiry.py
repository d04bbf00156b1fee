"""Per-node state stays bounded and ages out: one test per structure, in virtual time.

Covered elsewhere, for the same promise: the rate limiter (tests/test_ratelimit.py::
test_memory_stays_bounded_under_many_distinct_senders, ::test_idle_nodes_are_forgotten_without_forgetting_a_flooder),
conversation memory (tests/test_memory.py::test_an_idle_conversation_is_forgotten,
::test_prune_removes_idle_conversations_and_stale_snapshots), learnt keys (tests/test_mqtt_state.py::
test_learnt_keys_survive_a_restart_bounded_and_expiring) and the MQTT transport's tables (same file).
"""

from __future__ import annotations

import pytest

from meshbot.core.acks import AckRouter
from meshbot.core.aging import AgedSet
from meshbot.core.clock import VirtualClock
from meshbot.core.config_sections import JoinConfig
from meshbot.core.domain import AckStatus, SendResult
from meshbot.core.joiner import Joiner, judge
from meshbot.core.policy import SeenPackets
from meshbot.service.holdback import Holdback
from meshbot.service.intake import BUSY_TOLD_FOR_S, BUSY_TOLD_MAX
from meshbot.service.worker import REMAINDER_TTL_S
from meshbot.storage.store import Store

DISTINCT = 2000  # askers: more than any bound below


def test_the_busy_told_set_is_bounded_and_tells_a_node_again_after_an_hour(clock: VirtualClock) -> None:
    told = AgedSet(BUSY_TOLD_MAX, BUSY_TOLD_FOR_S)
    for node in range(DISTINCT):
        assert told.first_time(node, clock.now())
    assert len(told) == BUSY_TOLD_MAX
    assert not told.first_time(DISTINCT - 1, clock.now())  # told already: not again while busy
    clock.advance(BUSY_TOLD_FOR_S)
    assert told.first_time(DISTINCT - 1, clock.now())  # an hour on, a busy node hears it once more
    assert len(told) == 1


def test_remainders_for_more_are_deleted_once_too_old_to_take(clock: VirtualClock) -> None:
    store = Store(":memory:", wall=clock.now)
    for node in range(200):
        store.put_remainder(node, "the rest of an answer", 4)
    clock.advance(REMAINDER_TTL_S / 2)
    store.put_remainder(7, "a fresher rest", 2)
    clock.advance(REMAINDER_TTL_S / 2 + 1)
    assert store.expire_remainders(REMAINDER_TTL_S) == 199
    assert store.remainder_count() == 1 and store.take_remainder(7, REMAINDER_TTL_S) == ("a fresher rest", 2)


def test_held_answers_are_bounded(clock: VirtualClock) -> None:
    kept: dict[int, tuple[str, int]] = {}

    class Remainders:
        def put_remainder(self, node: int, text: str, next_index: int) -> None:
            kept[node] = (text, next_index)

    holdback = Holdback(Remainders(), tag="", max_answers=64)
    for query_id in range(DISTINCT):
        holdback.give_up(query_id, query_id, 1, "1/+ lost", SendResult(1, AckStatus.NAKED, "MAX_RETRANSMIT"), 1)
    assert len(holdback) == 64
    assert holdback.is_held(DISTINCT - 1) and not holdback.is_held(0)


def test_waiting_parts_of_questions_are_let_go_when_their_wait_ends(clock: VirtualClock) -> None:
    cfg = JoinConfig()
    joiner: Joiner[int] = Joiner(cfg)
    for node in range(DISTINCT):
        assert joiner.add((node, 0), node, judge("1/3 the first part of a long", cfg), clock.now()) is None
    assert len(joiner) == DISTINCT
    clock.advance(cfg.part_wait_s)
    assert len(joiner.due(clock.now())) == DISTINCT and len(joiner) == 0


def test_seen_packets_are_bounded() -> None:
    seen = SeenPackets(capacity=100)
    for node in range(DISTINCT):
        assert seen.is_new(node, 1)
    assert len(seen) == 100
    assert seen.is_new(0, 1)  # the oldest pairs went first


def test_unanswered_sends_are_forgotten_after_their_ttl(clock: VirtualClock) -> None:
    router = AckRouter(600.0, clock.now)
    for packet_id in range(1, DISTINCT):
        router.expect(packet_id, lambda result: None)
        router.resolve(packet_id + 100_000, SendResult(packet_id, AckStatus.ACKED))  # answers nobody waits for
    clock.advance(601.0)
    late: list[SendResult] = []
    router.expect(100_001, late.append)  # an answer kept for a send that never claimed it: gone too
    assert router.pending() == 1 and late == []


@pytest.mark.parametrize("bad", [(0, 1.0), (1, 0.0)])
def test_an_aged_set_needs_room_and_time(bad) -> None:
    with pytest.raises(ValueError):
        AgedSet(*bad)
