"""Power modes from battery and heat readings, with hysteresis. Pure: the readings come in from service/power.py.

| mode    | when                                                          | the bot                                 |
|---------|---------------------------------------------------------------|-----------------------------------------|
| normal  | battery at or above economy_below_percent, or external power  | as always                               |
| economy | below economy_below_percent                                   | one fragment at most, a smaller token cap |
| sleep   | below sleep_below_percent, or the CPU above max_cpu_temp_c    | no model answers but emergencies        |

A mode is left only `hysteresis_percent` past the line that entered it (5 °C for heat), so a battery hovering
at a line does not flap between modes.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from meshbot.core.config import PowerConfig

# The firmware's DeviceMetrics.battery_level: 0-100 percent, above 100 (101) when on external power.
EXTERNAL_POWER_LEVEL = 100
# Sleep for heat is left this many degrees below max_cpu_temp_c.
TEMP_HYSTERESIS_C = 5.0


class Mode(enum.StrEnum):
    """How much the bot may spend."""

    NORMAL = "normal"
    ECONOMY = "economy"
    SLEEP = "sleep"


_RANK = {Mode.NORMAL: 0, Mode.ECONOMY: 1, Mode.SLEEP: 2}
_BY_RANK = {rank: mode for mode, rank in _RANK.items()}


@dataclass(frozen=True)
class Reading:
    """What one source (or all of them, combined) says: battery percent, external power, CPU heat."""

    battery_percent: float | None = None
    external_power: bool = False
    cpu_temp_c: float | None = None
    source: str = ""

    def describe(self) -> str:
        """A short line for logs and !status: "battery 37%", "external power", "CPU 82°C"."""
        parts = []
        if self.external_power:
            parts.append("external power")
        if self.battery_percent is not None:
            parts.append(f"battery {self.battery_percent:.0f}%")
        if self.cpu_temp_c is not None:
            parts.append(f"CPU {self.cpu_temp_c:.0f}°C")
        return ", ".join(parts) or "no reading"


@dataclass(frozen=True)
class DeviceMetrics:
    """A node's device metrics as the firmware reports them."""

    battery_level: int | None = None  # 0-100, above 100: external power
    voltage: float | None = None


@runtime_checkable
class DeviceMetricsSource(Protocol):
    """A radio that knows nodes' device metrics (its node DB, filled by telemetry)."""

    def device_metrics_of(self, node: int) -> DeviceMetrics | None:
        """The node's last device metrics, or None."""


def reading_of_metrics(metrics: DeviceMetrics | None, source: str = "radio") -> Reading | None:
    """A node's device metrics as a reading; None when they say nothing (no level, or 0 with no voltage)."""
    if metrics is None or metrics.battery_level is None:
        return None
    level = metrics.battery_level
    if level > EXTERNAL_POWER_LEVEL:
        return Reading(external_power=True, source=source)
    if level <= 0 and not metrics.voltage:
        return None  # no battery sensor: the firmware reports 0 and no voltage
    return Reading(battery_percent=float(level), source=source)


def combine(readings: Iterable[Reading]) -> Reading:
    """All sources at once: the lowest battery, external power if any says so, the hottest CPU."""
    batteries, temps, external, names = [], [], False, []
    for r in readings:
        names.append(r.source)
        external = external or r.external_power
        if r.battery_percent is not None:
            batteries.append(r.battery_percent)
        if r.cpu_temp_c is not None:
            temps.append(r.cpu_temp_c)
    return Reading(
        battery_percent=min(batteries) if batteries else None,
        external_power=external,
        cpu_temp_c=max(temps) if temps else None,
        source="+".join(n for n in names if n),
    )


def _battery_rank(percent: float, cfg: PowerConfig, margin: float) -> int:
    if percent < cfg.sleep_below_percent + margin:
        return 2
    if percent < cfg.economy_below_percent + margin:
        return 1
    return 0


def next_mode(current: Mode, reading: Reading, cfg: PowerConfig) -> Mode:
    """The mode after `reading`: entered at a line, left only past it by the hysteresis."""
    rank = _RANK[current]
    if reading.external_power or reading.battery_percent is None:
        low, high = 0, 0
    else:
        # low: where the thresholds themselves put us; high: the most restrictive mode we may stay in.
        low = _battery_rank(reading.battery_percent, cfg, 0.0)
        high = _battery_rank(reading.battery_percent, cfg, cfg.hysteresis_percent)
    if reading.cpu_temp_c is not None:
        if reading.cpu_temp_c > cfg.max_cpu_temp_c:
            low = high = 2
        elif reading.cpu_temp_c > cfg.max_cpu_temp_c - TEMP_HYSTERESIS_C and rank == 2:
            high = 2  # cooling down: stay asleep until well under the line
    return _BY_RANK[min(max(rank, low), high)]


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_percent(text: str) -> float | None:
    """The first number a `[power] command` printed, as a battery percent (0-100, or above: external)."""
    found = _NUMBER.search(text)
    if found is None:
        return None
    value = float(found.group())
    return value if value >= 0 else None


def reading_of_percent(value: float, source: str) -> Reading:
    """A percent from a command or sysfs as a reading (above 100: external power)."""
    if value > EXTERNAL_POWER_LEVEL:
        return Reading(external_power=True, source=source)
    return Reading(battery_percent=value, source=source)
