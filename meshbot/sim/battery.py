"""A virtual solar battery for the bot's node: a panel with a day/night curve and weather, a base load, and the
drain of the bot's CPU time. Pure: it moves only when stepped, on whatever clock the caller keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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
