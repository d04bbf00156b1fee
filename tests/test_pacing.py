"""Pacing by the firmware's rate limit and by air time; the rolling-hour budget."""

from __future__ import annotations

import pytest

from meshbot.core.airtime import preset, time_on_air_s
from meshbot.core.limits import text_frame_len
from meshbot.core.pacing import Pacer, hourly_budget_s


def test_air_time_matches_the_facts_table() -> None:
    # mesh-facts: a full 255-byte frame on LONG_FAST is about 2.2 s, a 200-byte text about 1.9 s.
    assert time_on_air_s(255, preset("LONG_FAST")) == pytest.approx(2.2, abs=0.05)
    assert time_on_air_s(text_frame_len(200), preset("LONG_FAST")) == pytest.approx(1.9, rel=0.05)
    assert time_on_air_s(255, preset("LONG_SLOW")) == pytest.approx(14.3, abs=0.1)
    assert time_on_air_s(255, preset("SHORT_TURBO")) == pytest.approx(0.10, abs=0.01)


def test_gap_is_never_below_the_firmware_rate_limit() -> None:
    pacer = Pacer(preset("SHORT_TURBO"), min_gap_s=0.5, budget_s=1800)
    pacer.on_sent(100.0, 0.1)
    assert pacer.earliest_send() == pytest.approx(102.25)  # 2 s limit + jitter margin


def test_slow_presets_wait_for_the_packet_to_leave_the_air() -> None:
    pacer = Pacer(preset("LONG_SLOW"), min_gap_s=2.0, budget_s=1800)
    airtime = pacer.airtime_of("x" * 200)
    pacer.on_sent(0.0, airtime)
    assert pacer.earliest_send() == pytest.approx(airtime) and airtime > 10


def test_budget_is_half_the_region_duty_cycle_by_default() -> None:
    assert hourly_budget_s("EU_868", None) == pytest.approx(180.0)  # 10% of 3600 s, halved
    assert hourly_budget_s("US", None) == pytest.approx(1800.0)
    assert hourly_budget_s("EU_868", 1.0) == pytest.approx(36.0)


def test_the_budget_rolls_over_an_hour() -> None:
    pacer = Pacer(preset("LONG_FAST"), 2.0, budget_s=10.0)
    for t in range(4):
        pacer.on_sent(t * 3.0, 2.0)
    assert pacer.budget_left(10.0) == pytest.approx(2.0)
    assert pacer.affordable_fragments(10.0, wanted=3, fragment_airtime_s=1.9) == 1
    assert pacer.budget_left(3601.0) == pytest.approx(10.0 - 6.0)
    assert pacer.budget_left(3700.0) == pytest.approx(10.0)


def test_acks_the_node_sends_for_dms_count_against_the_region_limit() -> None:
    # EU_868: 10% = 360 s an hour for everything the node sends; our texts alone may use 180 s.
    pacer = Pacer(preset("LONG_FAST"), 2.0, budget_s=180.0, region_s=360.0)
    assert pacer.budget_left(0.0) == pytest.approx(180.0)
    for n in range(600):  # 600 DMs in: 600 ACKs of 0.48 s each, 286 s of the node's 360 s
        pacer.on_dm_received(n * 4.0)
    assert pacer.budget_left(2400.0) == pytest.approx(360 * 0.9 - 600 * pacer.airtime_of_ack(), abs=0.5)
    for n in range(100):
        pacer.on_dm_received(2400.0 + n)
    assert pacer.budget_left(2500.0) == 0.0  # ACKs alone now fill 90% of the region's hour


def test_a_duty_cycle_nak_holds_all_texts() -> None:
    pacer = Pacer(preset("LONG_FAST"), 2.0, budget_s=180.0, region_s=360.0)
    pacer.on_duty_nak(100.0)
    assert pacer.affordable_fragments(200.0, wanted=3, fragment_airtime_s=1.9) == 0
    assert pacer.affordable_fragments(800.0, wanted=3, fragment_airtime_s=1.9) == 3


def test_the_nodes_own_retries_of_a_dm_count_against_the_region_limit() -> None:
    pacer = Pacer(preset("LONG_FAST"), 2.0, budget_s=360.0, region_s=360.0)  # the region's limit binds
    text = "x" * 200
    start = pacer.budget_left(0.0)
    assert pacer.on_node_retries(0.0, text, waited_s=3.0) == 0  # a prompt ACK: sent once
    assert pacer.budget_left(0.0) == pytest.approx(start)
    interval = 2 * pacer.airtime_of(text, reply_id=True) + 4.5
    assert pacer.on_node_retries(0.0, text, waited_s=interval + 1) == 1  # ACK after one retry
    assert pacer.on_node_retries(0.0, text, waited_s=None) == 2  # gave up: sent 3 times in all
    retries_s = start - pacer.budget_left(0.0)
    # Retries go out at coding rate 4/8 in current firmware: each costs more than the first send.
    assert retries_s > 3 * pacer.airtime_of(text, reply_id=True)
    assert pacer.on_node_retries(0.0, text, waited_s=1000.0) == 2  # never more than the firmware makes
