"""The virtual solar battery, and the simulated week: power-aware, the box never goes flat and answers every emergency.

The rule model's week runs here in full; the real daemon's, on a virtual node at speed, for a few hours.
"""

from __future__ import annotations

import argparse
import logging

import pytest

from bench.solar_daemon import DaemonWeek, Load, Trace, outcome
from bench.solar_week import simulate
from meshbot.core.power import Mode
from meshbot.sim.battery import SolarBattery
from tests.faults_support import events


def test_the_panel_charges_by_day_only_and_the_level_stays_within_the_battery() -> None:
    battery = SolarBattery(capacity_wh=100, panel_w=20, base_w=0, weather=(1.0, 0.25), level_wh=50)
    assert battery.solar_w(3 * 3600) == 0.0 and battery.solar_w(12 * 3600) == pytest.approx(20)
    assert battery.solar_w(36 * 3600) == pytest.approx(5)  # the second day is overcast
    battery.step(12 * 3600, 3600)
    assert battery.level_wh == pytest.approx(50 + 17)
    battery.step(0, 3600, extra_j=1e9)
    assert battery.percent() == 0.0


def week_args(**changes: float) -> argparse.Namespace:
    values = dict(
        capacity_wh=240.0, panel_w=25.0, base_w=2.5, start_percent=80.0, ask_every_s=120.0,
        prompt_cpu_s=40.0, generate_cpu_s=200.0, hours=7 * 24.0,
    )  # fmt: skip
    values.update(changes)
    return argparse.Namespace(**values)


def test_a_power_aware_week_never_reaches_zero_and_answers_every_emergency_where_full_answers_do_not() -> None:
    aware, normal = simulate(week_args(), aware=True), simulate(week_args(), aware=False)
    assert min(aware.percent) > 0 and aware.emergencies_answered() == (168, 168)
    assert set(aware.modes) == {"normal", "economy", "sleep"}
    assert min(normal.percent) == 0 and normal.emergencies_answered()[0] < 168


def test_hours_through_the_daemon_move_its_mode_by_the_nodes_telemetry_and_an_sos_in_sleep_is_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    # A small battery at midnight, so two simulated hours do what a night does to a real one.
    battery = SolarBattery(capacity_wh=12.0, level_wh=12.0 * 0.45)
    week = DaemonWeek(battery, (40.0, 200 / 384), scale=1000.0)  # a full answer: 40 + 200 CPU-seconds
    trace = Trace()
    try:
        week.start(feed_every_s=300.0, start_s=0.0)
        week.drive(2.0, Load(), trace)
        done = outcome(week.node.sent, trace.asked, week.cfg)
        power = week.daemon.power if week.daemon else None
        assert power is not None and week.feed is not None
        reading, spent_j, reported = power.reading, power.energy.total_j, week.feed.reported
    finally:
        week.stop()
    # The mode moved by the node's telemetry, read through the radio, each line crossed once.
    assert [r.mode for r in events(caplog, "power-mode")] == ["economy", "sleep"]
    assert reading.source == "radio" and reading.battery_percent in {round(p) for _, p in reported[-3:]}
    assert trace.modes[0] is Mode.NORMAL and trace.modes[-1] is Mode.SLEEP
    # The SOS at 1:30 came in sleep, and got its "Emergency heard" and a model answer.
    assert trace.modes[89] is Mode.SLEEP and done.emergencies == [(0, True), (1, True)]
    assert done.answered["full"] and done.answered["one fragment"] and done.answered["notice"]
    # The drain is the energy the daemon logged per answer: 40 + 200 CPU-s × 1.5 W for a full one.
    answered = events(caplog, "answered")
    assert sum(r.energy_j for r in answered) == pytest.approx(spent_j)
    assert max(r.energy_j for r in answered) == pytest.approx(360.0)
    assert {r.energy_method for r in answered} == {"cpu-estimate"}
