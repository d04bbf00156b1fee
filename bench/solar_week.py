"""A simulated week on a solar battery: the bot's power modes against the same box answering at full length.

The battery is `meshbot.sim.battery.SolarBattery`; the modes are the daemon's own (`meshbot.core.power.next_mode`
with the default `[power]` thresholds, read once a minute as the monitor does). The load is steady: a question
every `--ask-every-s`, and an emergency every hour, which every mode answers in full. An answer's energy is its CPU
time × `[power] watts_per_core`: prompt reading plus generation in proportion to the token cap (economy's is 96).
It prints the battery every 6 hours, the lowest level and the emergencies a dead battery would have missed, and
with `--svg` draws the week.

    .venv/bin/python -m bench.solar_week --svg docs/solar-week.svg
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from meshbot.core.config import PowerConfig
from meshbot.core.power import Mode, Reading, next_mode
from meshbot.sim.battery import DAY_S, SolarBattery

STEP_S = 60.0
FULL_TOKENS = 384  # [model] max_tokens_cap: a three-fragment answer's cap
WEATHER = (1.0, 1.0, 0.3, 0.2, 0.5, 1.0, 1.0)  # the sun's share, day by day: two overcast days mid-week


@dataclass
class Run:
    """One week: the battery each minute, the mode, what was answered and what was missed."""

    aware: bool
    percent: list[float] = field(default_factory=list)
    modes: list[Mode] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=lambda: {"normal": 0, "economy": 0, "notice": 0})
    emergencies: int = 0
    emergencies_missed: int = 0


def answer_j(args: argparse.Namespace, tokens: int) -> float:
    """Energy of one answer with `tokens` at most: prompt reading plus generation, CPU-seconds × W per core."""
    cpu_s = args.prompt_cpu_s + args.generate_cpu_s * tokens / FULL_TOKENS
    return cpu_s * PowerConfig().watts_per_core


def simulate(args: argparse.Namespace, aware: bool) -> Run:
    """A week in one-minute steps."""
    cfg, run = PowerConfig(), Run(aware)
    battery = SolarBattery(
        capacity_wh=args.capacity_wh, panel_w=args.panel_w, base_w=args.base_w, weather=WEATHER,
        level_wh=args.capacity_wh * args.start_percent / 100,
    )  # fmt: skip
    mode, t = Mode.NORMAL, 0.0
    while t < 7 * DAY_S:
        alive = battery.level_wh > 0
        if aware and alive:
            mode = next_mode(mode, Reading(battery_percent=battery.percent()), cfg)
        spent = 0.0
        if t % args.ask_every_s < STEP_S and alive:
            if mode is Mode.NORMAL:
                spent, kind = answer_j(args, FULL_TOKENS), "normal"
            elif mode is Mode.ECONOMY:
                spent, kind = answer_j(args, cfg.economy_max_tokens), "economy"
            else:
                kind = "notice"
            run.answered[kind] += 1
        if t % 3600 == 1800:  # an emergency every hour, on the half hour: always answered in full if alive
            run.emergencies += 1
            if alive:
                spent += answer_j(args, FULL_TOKENS)
            else:
                run.emergencies_missed += 1
        battery.step(t, STEP_S, spent)
        run.percent.append(battery.percent())
        run.modes.append(mode)
        t += STEP_S
    return run


def table(runs: list[Run]) -> str:
    """The battery every 6 hours, side by side."""
    lines = ["| day hour | " + " | ".join("power-aware" if r.aware else "always normal" for r in runs) + " |"]
    lines.append("|---|" + "---|" * len(runs))
    per_6h = int(6 * 3600 / STEP_S)
    for i in range(per_6h - 1, len(runs[0].percent), per_6h):
        hours = (i + 1) * STEP_S / 3600
        cells = [f"{r.percent[i]:5.1f}% {r.modes[i].value}" if r.aware else f"{r.percent[i]:5.1f}%" for r in runs]
        lines.append(f"| d{int(hours // 24) + 1} {int(hours % 24):02d}h | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def svg(runs: list[Run], width: int = 900, height: int = 300) -> str:
    """The week's battery as an SVG line chart, economy and sleep shaded under the power-aware line."""
    n, pad = len(runs[0].percent), 40
    x = lambda i: pad + (width - 2 * pad) * i / (n - 1)
    y = lambda p: pad + (height - 2 * pad) * (1 - p / 100)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">']
    parts.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    aware = next(r for r in runs if r.aware)
    shade = {Mode.ECONOMY: "#fff2cc", Mode.SLEEP: "#f8cecc"}
    for i, mode in enumerate(aware.modes):
        if mode in shade and i % 10 == 0:
            parts.append(f'<rect x="{x(i):.1f}" y="{pad}" width="{x(10) - x(0):.1f}" height="{height - 2 * pad}" '
                         f'fill="{shade[mode]}"/>')  # fmt: skip
    for day in range(8):
        xd = pad + (width - 2 * pad) * day / 7
        parts.append(f'<line x1="{xd:.1f}" y1="{pad}" x2="{xd:.1f}" y2="{height - pad}" stroke="#ddd"/>')
        if day < 7:
            parts.append(f'<text x="{xd + 40:.1f}" y="{height - 22}" font-size="11">day {day + 1} '
                         f'({int(WEATHER[day] * 100)}% sun)</text>')  # fmt: skip
    for p in (0, 15, 40, 100):
        parts.append(f'<line x1="{pad}" y1="{y(p):.1f}" x2="{width - pad}" y2="{y(p):.1f}" stroke="#bbb" '
                     f'stroke-dasharray="3,3"/><text x="4" y="{y(p) + 4:.1f}" font-size="11">{p}%</text>')  # fmt: skip
    for run, colour in zip(runs, ("#1f77b4", "#d62728"), strict=False):
        points = " ".join(f"{x(i):.1f},{y(p):.1f}" for i, p in enumerate(run.percent) if i % 5 == 0)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
    parts.append(f'<text x="{pad}" y="20" font-size="13">Battery over a simulated week: power-aware (blue; '
                 'economy yellow, sleep red) vs always normal (red line)</text></svg>')  # fmt: skip
    return "\n".join(parts)


def main() -> None:
    """Run both weeks and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity-wh", type=float, default=240.0, help="a 12 V 20 Ah LiFePO4")
    parser.add_argument("--panel-w", type=float, default=25.0)
    parser.add_argument("--base-w", type=float, default=2.5, help="the box idling: Pi and radio")
    parser.add_argument("--start-percent", type=float, default=80.0)
    parser.add_argument("--ask-every-s", type=float, default=120.0)
    parser.add_argument("--prompt-cpu-s", type=float, default=40.0, help="CPU-seconds to read a prompt")
    parser.add_argument("--generate-cpu-s", type=float, default=200.0, help="CPU-seconds for a full answer")
    parser.add_argument("--svg", help="write the chart here")
    args = parser.parse_args()
    runs = [simulate(args, aware=True), simulate(args, aware=False)]
    print(table(runs))
    for run in runs:
        dead_h = sum(1 for p in run.percent if p <= 0) * STEP_S / 3600
        print(
            f"{'power-aware' if run.aware else 'always normal'}: lowest {min(run.percent):.1f}%, "
            f"{dead_h:.1f} h at 0%, emergencies answered {run.emergencies - run.emergencies_missed}/{run.emergencies}, "
            f"questions: {run.answered}"
        )
    if args.svg:
        with open(args.svg, "w", encoding="utf-8") as out:
            out.write(svg(runs))


if __name__ == "__main__":
    main()
