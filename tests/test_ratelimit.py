"""Abuse limits: what a flooder, a busy mesh and an operator's allow/deny lists see."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshbot.core.ratelimit import AccessList, NodeLimiter, TokenBucket, Verdict, parse_node_id

ALICE = 0x0A11CE00
BOB = 0x0B0B0000
MALLORY = 0x0BADBAD0

gaps = st.lists(st.floats(min_value=0.0, max_value=600.0, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    burst=st.floats(min_value=0.5, max_value=20.0),
    per_s=st.floats(min_value=0.0, max_value=2.0),
    start=st.floats(min_value=-1e6, max_value=1e9),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=600.0), st.floats(min_value=0.05, max_value=4.0)),
        min_size=1,
        max_size=80,
    ),
)
def test_bucket_never_allows_more_than_burst_plus_refill(burst, per_s, start, steps) -> None:
    bucket = TokenBucket(burst, per_s, start)
    now, spent = start, 0.0
    for gap, cost in steps:
        now += gap
        if bucket.take(now, cost):
            spent += cost
        assert spent <= burst + per_s * (now - start) + 1e-6 * (1 + len(steps))


@settings(max_examples=200, deadline=None)
@given(
    burst=st.floats(min_value=1.0, max_value=10.0),
    per_s=st.floats(min_value=0.001, max_value=2.0),
    arrivals=gaps,
)
def test_waiting_wait_s_is_always_enough(burst, per_s, arrivals) -> None:
    bucket = TokenBucket(burst, per_s, 0.0)
    now = 0.0
    for gap in arrivals:
        now += gap
        bucket.take(now)
        wait = bucket.wait_s(now)
        assert math.isfinite(wait) and wait >= 0
        if wait > 1e-6:
            assert not bucket.take(now), "wait_s said to wait but take succeeded"
        assert bucket.take(now + wait), "took nothing even after waiting wait_s"
        now += wait


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(burst=2, refill_per_s=0.5, now=100.0)
    assert bucket.take(100.0) and bucket.take(100.0)
    assert not bucket.take(100.0)
    assert bucket.wait_s(100.0) == pytest.approx(2.0)
    assert not bucket.take(101.0)
    assert bucket.take(102.0)


def test_time_going_backwards_grants_nothing() -> None:
    bucket = TokenBucket(burst=1, refill_per_s=1.0, now=1000.0)
    assert bucket.take(1000.0)
    assert not bucket.take(10.0)
    assert not bucket.take(1000.5)
    assert bucket.take(1001.0)


def test_a_cost_above_burst_can_never_be_paid() -> None:
    bucket = TokenBucket(burst=3, refill_per_s=1.0, now=0.0)
    assert bucket.wait_s(0.0, cost=4) == math.inf
    assert not bucket.take(1e9, cost=4)
    assert TokenBucket(burst=1, refill_per_s=0.0, now=0.0).wait_s(0.0, cost=1) == 0.0


@pytest.mark.parametrize("burst, per_s", [(0, 1.0), (-1, 1.0), (1, -0.1)])
def test_bucket_rejects_nonsense(burst: float, per_s: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(burst, per_s, 0.0)


@pytest.mark.parametrize(
    "kw", [dict(per_node_burst=0.5), dict(global_burst=0), dict(per_node_per_hour=-1), dict(max_nodes=0)]
)
def test_limiter_rejects_settings_that_refuse_everyone(kw) -> None:
    with pytest.raises(ValueError):
        _limiter(**kw)


def _limiter(**kw) -> NodeLimiter:
    args = dict(per_node_burst=3, per_node_per_hour=6, global_burst=100, global_per_hour=600)
    args.update(kw)
    return NodeLimiter(**args)


def test_flooder_is_refused_after_burst_and_gets_one_notice() -> None:
    limiter = _limiter()
    verdicts = [limiter.check(MALLORY, 1000.0 + i) for i in range(10)]
    assert [v.allowed for v in verdicts] == [True] * 3 + [False] * 7
    assert [v.first_refusal for v in verdicts] == [False] * 3 + [True] + [False] * 6
    assert {v.reason for v in verdicts[3:]} == {"node-rate"}
    # 6 per hour: one message every 600 s; the notice can say when to come back.
    assert verdicts[3].retry_after_s == pytest.approx(600 - 3, abs=1.0)


def test_new_streak_after_an_allowed_message_gets_a_new_notice() -> None:
    limiter = _limiter()
    for i in range(5):
        limiter.check(MALLORY, float(i))
    assert limiter.check(MALLORY, 700.0).allowed  # refilled one token
    again = limiter.check(MALLORY, 701.0)
    assert not again.allowed and again.first_refusal
    assert not limiter.check(MALLORY, 702.0).first_refusal


@settings(max_examples=150, deadline=None)
@given(arrivals=gaps)
def test_first_refusal_exactly_once_per_streak(arrivals) -> None:
    limiter = _limiter(per_node_burst=2, per_node_per_hour=60)
    now, verdicts = 0.0, []
    for gap in arrivals:
        now += gap
        verdicts.append(limiter.check(MALLORY, now))
    streaks = sum(1 for i, v in enumerate(verdicts) if not v.allowed and (i == 0 or verdicts[i - 1].allowed))
    assert sum(v.first_refusal for v in verdicts) == streaks
    assert all(not v.first_refusal for v in verdicts if v.allowed)


def test_a_flooder_does_not_slow_anyone_else() -> None:
    limiter = _limiter(global_burst=5, global_per_hour=60)
    for i in range(50):
        limiter.check(MALLORY, float(i))
    # Mallory got 3; her 47 refusals must not have spent the global budget.
    assert limiter.check(ALICE, 50.0).allowed
    assert limiter.check(BOB, 50.0).allowed


def test_global_limit_refuses_everyone_once_spent() -> None:
    limiter = _limiter(global_burst=4, global_per_hour=60)  # one a minute overall
    verdicts = [limiter.check(0x1000 + n, 10.0) for n in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 4 + [False] * 2
    assert verdicts[4] == Verdict(False, "global-rate", True, pytest.approx(60.0))
    # The refused nodes kept their own tokens: they go through once the global bucket refills.
    assert limiter.check(0x1000 + 4, 70.0).allowed


def test_memory_stays_bounded_under_many_distinct_senders() -> None:
    limiter = _limiter(max_nodes=100)
    for n in range(5000):
        limiter.check(0x2000 + n, 0.0)
    assert limiter.tracked_nodes() <= 100


def test_idle_nodes_are_forgotten_without_forgetting_a_flooder() -> None:
    limiter = _limiter(global_burst=1000, global_per_hour=100000)
    for n in range(50):
        limiter.check(0x3000 + n, 0.0)
    for i in range(5):
        limiter.check(MALLORY, 3000.0 + i)  # an hour later: the 50 are full again
    assert limiter.tracked_nodes() <= 2
    assert not limiter.check(MALLORY, 3010.0).allowed  # Mallory is still remembered as empty


@pytest.mark.parametrize(
    "text, num",
    [
        ("!a1b2c3d4", 0xA1B2C3D4),
        ("!A1B2C3D4", 0xA1B2C3D4),
        ("0xa1b2c3d4", 0xA1B2C3D4),
        (" !0000beef ", 0xBEEF),
        ("2712847316", 2712847316),
        (0xA1B2C3D4, 0xA1B2C3D4),
    ],
)
def test_node_id_formats(text: str | int, num: int) -> None:
    assert parse_node_id(text) == num


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "!",
        "0x",
        "!xyz",
        "a1b2c3d4",
        "-5",
        "+5",
        "1_000",
        "!1 2",
        "12.5",
        0,
        -1,
        0xFFFFFFFF,
        0x1_0000_0000,
        "!ffffffff",
        True,
        1.5,
        None,
    ],
)
def test_bad_node_ids_say_what_is_expected(bad) -> None:
    with pytest.raises(ValueError, match="bad node id"):
        parse_node_id(bad)


def test_access_list_deny_wins_and_empty_allow_means_everyone() -> None:
    open_to_all = AccessList(deny=["!0badbad0"])
    assert open_to_all.permits(ALICE) and open_to_all.permits(BOB)
    assert not open_to_all.permits(MALLORY)
    club = AccessList(allow=["!0a11ce00", str(BOB), MALLORY], deny=["0x0badbad0"])
    assert club.permits(ALICE) and club.permits(BOB)
    assert not club.permits(MALLORY)  # on both lists: deny wins
    assert not club.permits(0x12345678)  # not on a non-empty allow list
    assert AccessList().permits(MALLORY)


def test_access_list_reports_the_bad_entry() -> None:
    with pytest.raises(ValueError, match="'!nothex'"):
        AccessList(allow=["!a1b2c3d4", "!nothex"])
