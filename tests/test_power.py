"""Power modes with hysteresis (core/power.py) and the sources and energy meter behind them (service/power.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbot.core.clock import VirtualClock
from meshbot.core.config import PowerConfig, load_config
from meshbot.core.power import DeviceMetrics, Mode, Reading, combine, next_mode, parse_percent, reading_of_metrics
from meshbot.service.power import EnergyMeter, PowerMonitor, PowerSources, read_sysfs

CFG = PowerConfig()  # economy below 40, sleep below 15, hysteresis 5, max 80 °C


def walk(levels: list[float], cfg: PowerConfig = CFG) -> list[Mode]:
    mode, out = Mode.NORMAL, []
    for level in levels:
        mode = next_mode(mode, Reading(battery_percent=level), cfg)
        out.append(mode)
    return out


def test_each_mode_is_entered_at_its_line_and_left_only_past_it() -> None:
    levels = [50, 40, 39.9, 42, 44.9, 45, 20, 14.9, 17, 19.9, 20, 44, 45]
    assert walk(levels) == [
        "normal", "normal", "economy", "economy", "economy", "normal",
        "economy", "sleep", "sleep", "sleep", "economy", "economy", "normal",
    ]  # fmt: skip


def test_external_power_is_normal_and_no_reading_changes_nothing_to_normal() -> None:
    assert next_mode(Mode.SLEEP, Reading(battery_percent=5, external_power=True), CFG) is Mode.NORMAL
    assert next_mode(Mode.ECONOMY, Reading(), CFG) is Mode.NORMAL


def test_a_hot_cpu_sleeps_and_wakes_five_degrees_under_the_line() -> None:
    hot = [81, 79, 75.1, 75, 60]
    modes, mode = [], Mode.NORMAL
    for temp in hot:
        mode = next_mode(mode, Reading(battery_percent=90, cpu_temp_c=temp), CFG)
        modes.append(mode)
    assert modes == ["sleep", "sleep", "sleep", "normal", "normal"]


RANK = {Mode.NORMAL: 0, Mode.ECONOMY: 1, Mode.SLEEP: 2}
LINE = {Mode.ECONOMY: CFG.economy_below_percent, Mode.SLEEP: CFG.sleep_below_percent}


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=2, max_size=60))
def test_a_mode_changes_only_past_a_line_and_never_flaps_inside_the_band(levels: list[float]) -> None:
    modes = walk(levels)
    for before, after, level in zip([Mode.NORMAL, *modes], modes, levels, strict=False):
        if RANK[after] > RANK[before]:  # down: below the line of the mode entered
            assert level < LINE[after]
        elif RANK[after] < RANK[before]:  # up: past the line of the mode left, by the hysteresis
            assert level >= LINE[before] + CFG.hysteresis_percent
    for level, mode in zip(levels, modes, strict=True):
        assert (level < CFG.sleep_below_percent) <= (mode is Mode.SLEEP)
        assert (level >= CFG.economy_below_percent + CFG.hysteresis_percent) <= (mode is Mode.NORMAL)


def test_device_metrics_above_100_mean_external_power_and_0_without_voltage_means_no_sensor() -> None:
    assert reading_of_metrics(DeviceMetrics(101, 5.0)) == Reading(external_power=True, source="radio")
    assert reading_of_metrics(DeviceMetrics(37, 3.7)) == Reading(battery_percent=37.0, source="radio")
    assert reading_of_metrics(DeviceMetrics(0, 0.0)) is None
    assert reading_of_metrics(None) is None


def test_combined_sources_take_the_lowest_battery_and_the_hottest_cpu() -> None:
    both = combine([Reading(60, source="radio"), Reading(30, source="command"), Reading(cpu_temp_c=55, source="t")])
    assert (both.battery_percent, both.cpu_temp_c, both.external_power) == (30, 55, False)


def test_a_command_percent_is_its_first_number() -> None:
    assert parse_percent("battery: 57.5 %\n") == 57.5
    assert parse_percent("no battery") is None


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")


def test_sysfs_batteries_mains_and_thermal_zones(tmp_path: Path) -> None:
    write(tmp_path, "class/power_supply/BAT0/type", "Battery")
    write(tmp_path, "class/power_supply/BAT0/capacity", "23")
    write(tmp_path, "class/power_supply/BAT0/status", "Discharging")
    write(tmp_path, "class/power_supply/AC/type", "Mains")
    write(tmp_path, "class/power_supply/AC/online", "0")
    write(tmp_path, "class/thermal/thermal_zone0/temp", "48500")
    write(tmp_path, "class/thermal/thermal_zone1/temp", "61000")
    reading = combine(read_sysfs(tmp_path))
    assert (reading.battery_percent, reading.external_power, reading.cpu_temp_c) == (23.0, False, 61.0)
    write(tmp_path, "class/power_supply/AC/online", "1")
    assert combine(read_sysfs(tmp_path)).external_power


def monitor(cfg: PowerConfig, store=None) -> PowerMonitor:
    return PowerMonitor(cfg, PowerSources(cfg), VirtualClock(), store)


def test_the_monitor_reads_a_command_and_logs_each_mode_once_on_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    level = tmp_path / "level"
    cfg = PowerConfig(command=f"{sys.executable} -c \"print(open('{level}').read())\"")
    mon = monitor(cfg)
    modes = []
    for value in ("80", "35", "33", "12", "18", "101"):
        level.write_text(value)
        modes.append(mon.poll())
    assert modes == ["normal", "economy", "economy", "sleep", "sleep", "normal"]
    logged = [r.mode for r in caplog.records if getattr(r, "event", None) == "power-mode"]
    assert logged == ["economy", "sleep", "normal"]
    assert "power normal (external power)" in mon.status_line()


def test_a_failing_source_keeps_the_mode_and_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    mon = monitor(PowerConfig(command=str(tmp_path / "missing-command")))
    assert [mon.poll(), mon.poll()] == [Mode.NORMAL, Mode.NORMAL]
    assert len([r for r in caplog.records if getattr(r, "event", None) == "power-source-error"]) == 1


def test_energy_from_rapl_where_readable_else_cpu_seconds_times_watts(tmp_path: Path) -> None:
    write(tmp_path, "intel-rapl:0/energy_uj", "1000000")
    write(tmp_path, "intel-rapl:0/max_energy_range_uj", "5000000")
    write(tmp_path, "intel-rapl:0:0/energy_uj", "999")  # a subzone: already inside the package's count
    cpu = iter([10.0, 20.0, 23.0])  # RAPL needs no CPU time at the end
    meter = EnergyMeter(PowerConfig(powercap_root=str(tmp_path), watts_per_core=2.0), lambda: next(cpu))
    mark = meter.begin()
    write(tmp_path, "intel-rapl:0/energy_uj", "500000")  # wrapped past 5 J: 4.5 J used
    assert meter.end(mark) == (pytest.approx(4.5), "rapl")
    (tmp_path / "intel-rapl:0" / "energy_uj").unlink()
    mark = meter.begin()
    assert meter.end(mark) == (pytest.approx(6.0), "cpu-estimate")
    assert meter.total_j == pytest.approx(10.5)


def test_the_power_env_names_work() -> None:
    cfg = load_config(
        environ={"MESHBOT_POWER_ECONOMY_BELOW_PERCENT": "30", "MESHBOT_POWER_SLEEP_BELOW_PERCENT": "10"}
    ).power
    assert (cfg.economy_below_percent, cfg.sleep_below_percent) == (30.0, 10.0)
