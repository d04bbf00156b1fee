"""The fair queue: one chatty node cannot starve the others."""

from __future__ import annotations

from meshbot.core.policy import Accept, Kind
from meshbot.service.queueing import Admission, FairQueue, Query
from tests.fakes import ALICE, BOB, dm


def q(node: int, n: int) -> Query:
    msg = dm(f"q{n}", sender=node, packet_id=n)
    return Query(msg, Accept(Kind.ASK, f"q{n}", node, 0, True), 0.0)


def test_nodes_take_turns() -> None:
    fq = FairQueue(max_depth=10, max_per_node=5)
    for n in range(1, 4):
        assert fq.put(q(ALICE, n)) is Admission.ACCEPTED
    fq.put(q(BOB, 10))
    order = [fq.get(0).decision.question for _ in range(4)]
    assert order == ["q1", "q10", "q2", "q3"]


def test_limits_per_node_and_overall() -> None:
    fq = FairQueue(max_depth=3, max_per_node=2)
    assert [fq.put(q(ALICE, n)) for n in (1, 2, 3)] == [Admission.ACCEPTED, Admission.ACCEPTED, Admission.NODE_FULL]
    assert fq.put(q(BOB, 4)) is Admission.ACCEPTED
    assert fq.put(q(0x42, 5)) is Admission.FULL
    assert fq.depth() == 3


def test_get_times_out_and_close_wakes() -> None:
    fq = FairQueue(max_depth=1, max_per_node=1)
    assert fq.get(0.01) is None
    fq.close()
    assert fq.get(5.0) is None
