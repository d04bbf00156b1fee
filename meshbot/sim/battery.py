"""A virtual solar battery for the bot's node: a panel with a day/night curve and weather, a base load, and the
drain of the bot's CPU time. `SolarBattery` is pure (it moves only when stepped); `BatteryFeed` reports it as the
bot's node's telemetry on the virtual mesh.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshbot.core.domain import Clock
from meshbot.sim.rules.telemetry import device_metrics_packet

if TYPE_CHECKING:
    from meshbot.sim.node.node import VirtualNode

DAY_S = 86_400.0


@dataclass
class SolarBattery:
    """Energy in a battery charged by a panel and drained by the box; `percent()` is what the node would report."""

    capacity_wh: float = 240.0  # e.g. a 12 V 20 Ah LiFePO4
    panel_w: float = 25.0  # peak, at noon in full sun
    base_w: float = 2.5  # the Pi idling and the radio, whatever the bot does
    charge_efficiency: float = 0.85
    sunrise_h: float = 6.0
    sunset_h: float = 18.0
    weather: Sequence[float] = (1.0,)  # the sun's share per day, repeating (0.25: overcast)
    level_wh: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.level_wh < 0:
            self.level_wh = self.capacity_wh

    def solar_w(self, t_s: float) -> float:
        """What the panel gives at `t_s` seconds since the first midnight: a half-sine between sunrise and sunset."""
        day, hour = divmod(t_s / 3600.0, 24.0)
        if not self.sunrise_h < hour < self.sunset_h:
            return 0.0
        share = self.weather[int(day) % len(self.weather)]
        return self.panel_w * share * math.sin(math.pi * (hour - self.sunrise_h) / (self.sunset_h - self.sunrise_h))

    def step(self, t_s: float, dt_s: float, extra_j: float = 0.0) -> None:
        """Advance `dt_s` from `t_s`: the panel charges, the base load and `extra_j` (the model's work) drain."""
        gained = self.solar_w(t_s) * self.charge_efficiency * dt_s / 3600.0
        spent = (self.base_w * dt_s + extra_j) / 3600.0
        self.level_wh = min(self.capacity_wh, max(0.0, self.level_wh + gained - spent))

    def percent(self) -> float:
        """The charge in percent, as the node's device metrics report it."""
        return 100.0 * self.level_wh / self.capacity_wh


class BatteryFeed:
    """Reports a `SolarBattery` as the bot's node's device telemetry, on the sim's clock, as the firmware does.

    Every `every_s` simulated seconds it steps the battery (the panel by the time of day, the base load, and the
    bot's work since the last report) and injects a TELEMETRY packet from the node's own number, which the library
    files in its node DB and the daemon's power monitor reads. The bot's work is `spent_j`, the joules it has
    reported so far (the daemon's `PowerMonitor.energy.total_j`, what it logs per answer); without one, this
    process's CPU-seconds × `watts_per_core`.
    """

    def __init__(
        self,
        node: VirtualNode,
        battery: SolarBattery,
        clock: Clock,
        *,
        every_s: float = 300.0,
        start_s: float = 12 * 3600.0,  # the sim's time 0 is this far into the first day
        cpu_seconds: Callable[[], float] = time.process_time,
        watts_per_core: float = 1.5,
        spent_j: Callable[[], float] | None = None,
    ) -> None:
        self.node, self.battery, self.clock = node, battery, clock
        self.every_s, self.start_s = every_s, start_s
        self._spent = spent_j or (lambda: cpu_seconds() * watts_per_core)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._packet_ids = itertools.count(0x7E000000)
        self.reported: list[tuple[float, float]] = []  # (sim time, percent)

    def report(self) -> None:
        """Inject the battery's level now."""
        level = round(self.battery.percent())
        self.reported.append((self.clock.now(), self.battery.percent()))
        packet = device_metrics_packet(
            self.node.node_num, next(self._packet_ids), level, 3.3 + level / 100, when=int(time.time())
        )
        self.node.inject_packet(packet)

    def start(self) -> None:
        """Report at once, then every `every_s` of the sim's clock."""
        self.report()
        self._thread = threading.Thread(target=self._run, name="sim-battery", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_t, last_j = self.clock.now(), self._spent()
        while not self.clock.wait_for(self._stop, self.every_s):
            now, spent = self.clock.now(), self._spent()
            self.battery.step(self.start_s + last_t, now - last_t, spent - last_j)
            last_t, last_j = now, spent
            self.report()

    def stop(self) -> None:
        """Stop reporting."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
