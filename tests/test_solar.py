"""The virtual solar battery, and the simulated week: power-aware, the box never goes flat and answers every emergency."""

from __future__ import annotations

import argparse

import pytest

from bench.solar_week import simulate
from meshbot.sim.battery import SolarBattery


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
        prompt_cpu_s=40.0, generate_cpu_s=200.0,
    )  # fmt: skip
    values.update(changes)
    return argparse.Namespace(**values)


def test_a_power_aware_week_never_reaches_zero_and_answers_every_emergency_where_full_answers_do_not() -> None:
    aware, normal = simulate(week_args(), aware=True), simulate(week_args(), aware=False)
    assert min(aware.percent) > 0 and (aware.emergencies, aware.emergencies_missed) == (168, 0)
    assert set(aware.modes) == {"normal", "economy", "sleep"}
    assert min(normal.percent) == 0 and normal.emergencies_missed > 0
