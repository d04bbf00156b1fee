"""A simulated week on a solar battery, run through the real daemon, beside a box that always answers in full.

The bot's node is a virtual node on a sped-up clock (`--scale`, default 1000x: a week in about ten minutes); it
reports `meshbot.sim.battery.SolarBattery` as its own device telemetry every 5 minutes as firmware does; the real
daemon's power monitor reads it through the radio, and the daemon's modes (default `[power]` thresholds) decide:
full answers, economy's one fragment under 96 tokens, sleep's notice, emergencies always. The battery drains by
the box's idle load and the energy the daemon's meter reports per answer: a scripted model with a fixed CPU cost
(`--prompt-cpu-s` to read a prompt, `--generate-cpu-s` for a full 384-token answer) × `[power] watts_per_core`.
The load is steady: a question every `--ask-every-s` from seven handsets, an SOS every hour on the half hour.

The comparison line, "always normal", is not the daemon: it is the rule model below (`simulate`), the same
battery and answer costs in one-minute steps with the bot never leaving normal, and answering nothing while the
battery is empty. It prints the battery every 6 hours, the lowest level, the modes and the emergencies answered
per hour, and with `--svg` draws the week.

    .venv/bin/python -m bench.solar_week --svg docs/solar-week.svg
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from bench.solar_daemon import DaemonWeek, Load, Trace, outcome, quiet_logs
from meshbot.core.config import PowerConfig
from meshbot.core.power import Mode, Reading, next_mode
from meshbot.sim.battery import SolarBattery

STEP_S = 60.0
FULL_TOKENS = 384  # [model] max_tokens_cap: a three-fragment answer's cap
WEATHER = (1.0, 1.0, 0.3, 0.2, 0.5, 1.0, 1.0)  # the sun's share, day by day: two overcast days mid-week


@dataclass
class Run:
    """One week: the battery each minute, the mode, what was answered, and each hour's emergency."""

    label: str
    aware: bool
    percent: list[float] = field(default_factory=list)
    modes: list[Mode] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)
    emergencies: list[tuple[int, bool]] = field(default_factory=list)  # (hour, answered)
    wall_s: float = 0.0  # real seconds the run took

    def emergencies_answered(self, first_h: int = 0, last_h: int = 1 << 30) -> tuple[int, int]:
        """(answered, sent) of the emergencies sent in hours [first_h, last_h)."""
        these = [ok for hour, ok in self.emergencies if first_h <= hour < last_h]
        return sum(these), len(these)


def battery_of(args: argparse.Namespace) -> SolarBattery:
    """The week's battery, at `--start-percent` at the first midnight."""
    return SolarBattery(
        capacity_wh=args.capacity_wh, panel_w=args.panel_w, base_w=args.base_w, weather=WEATHER,
        level_wh=args.capacity_wh * args.start_percent / 100,
    )  # fmt: skip


def answer_j(args: argparse.Namespace, tokens: int) -> float:
    """Energy of one answer with `tokens` at most: prompt reading plus generation, CPU-seconds × W per core."""
    cpu_s = args.prompt_cpu_s + args.generate_cpu_s * tokens / FULL_TOKENS
    return cpu_s * PowerConfig().watts_per_core


def daemon_week(args: argparse.Namespace, **cfg: object) -> Run:
    """The week through the real daemon on a virtual node, at `args.scale` times real time."""
    battery, trace = battery_of(args), Trace()
    week = DaemonWeek(battery, (args.prompt_cpu_s, args.generate_cpu_s / FULL_TOKENS), args.scale, **cfg)
    started = time.monotonic()
    try:
        week.start(feed_every_s=args.telemetry_every_s, start_s=0.0)
        week.drive(args.hours, Load(args.ask_every_s), trace, STEP_S)
        time.sleep(2.0)  # the last answers' fragments reach the node
        done = outcome(week.node.sent, trace.asked, week.cfg)
    finally:
        week.stop()
    run = Run("daemon, power-aware", True, trace.percent, trace.modes, done.answered, done.emergencies)
    run.wall_s = time.monotonic() - started
    return run


def simulate(args: argparse.Namespace, aware: bool) -> Run:
    """The rule model: a week in one-minute steps with the daemon's mode rule (or none), nothing on when empty."""
    cfg, battery = PowerConfig(), battery_of(args)
    run = Run("rule model, " + ("power-aware" if aware else "always normal"), aware,
              answered={"full": 0, "one fragment": 0, "notice": 0, "none": 0})  # fmt: skip
    mode, t = Mode.NORMAL, 0.0
    while t < args.hours * 3600:
        alive = battery.level_wh > 0
        if aware and alive:
            mode = next_mode(mode, Reading(battery_percent=battery.percent()), cfg)
        spent = 0.0
        if t % args.ask_every_s < STEP_S:
            kind = "none" if not alive else {Mode.NORMAL: "full", Mode.ECONOMY: "one fragment"}.get(mode, "notice")
            spent = {"full": answer_j(args, FULL_TOKENS), "one fragment": answer_j(args, cfg.economy_max_tokens)}.get(
                kind, 0.0
            )
            run.answered[kind] += 1
        if t % 3600 == 1800:  # an emergency every hour, on the half hour: always answered in full if alive
            run.emergencies.append((int(t // 3600), alive))
            spent += answer_j(args, FULL_TOKENS) if alive else 0.0
        battery.step(t, STEP_S, spent)
        run.percent.append(battery.percent())
        run.modes.append(mode)
        t += STEP_S
    return run


def table(runs: list[Run]) -> str:
    """The battery every 6 hours side by side (the mode where it has one), and the 6 hours' emergencies answered."""
    lines = ["| day hour | " + " | ".join(r.label for r in runs) + " |", "|---|" + "---|" * len(runs)]
    per_6h = int(6 * 3600 / STEP_S)
    for i in range(per_6h - 1, min(len(r.percent) for r in runs), per_6h):
        hours = round((i + 1) * STEP_S / 3600)
        cells = []
        for r in runs:
            ok, sent = r.emergencies_answered(hours - 6, hours)
            mode = f" {r.modes[i].value}" if r.aware else ""
            cells.append(f"{r.percent[i]:5.1f}%{mode}, SOS {ok}/{sent}")
        lines.append(f"| d{hours // 24 + (hours % 24 > 0)} {hours % 24 or 24:02d}h | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(run: Run) -> str:
    """One line: lowest level, hours empty, time in each mode, emergencies, questions by how they were answered."""
    dead_h = sum(1 for p in run.percent if p <= 0) * STEP_S / 3600
    ok, sent = run.emergencies_answered()
    hours = {hour for hour, _ in run.emergencies}
    missed = sorted(hour for hour in hours if not run.emergencies_answered(hour, hour + 1)[0])
    in_mode = ", ".join(f"{m.value} {sum(x is m for x in run.modes) * STEP_S / 3600:.1f} h" for m in Mode)
    took = f"; {run.wall_s / 60:.1f} min real time" if run.wall_s else ""
    return (
        f"{run.label}: lowest {min(run.percent):.1f}%, {dead_h:.1f} h at 0%, modes: {in_mode}; emergencies answered "
        f"{ok}/{sent}, hours without one answered: {missed or 'none'}; questions: {run.answered}{took}"
    )


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
                 'economy yellow, sleep red: the daemon) vs always normal (red: the rule model)</text></svg>')  # fmt: skip
    return "\n".join(parts)


def main() -> None:
    """Run the week through the daemon and the rule model's always-normal week; print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity-wh", type=float, default=240.0, help="a 12 V 20 Ah LiFePO4")
    parser.add_argument("--panel-w", type=float, default=25.0)
    parser.add_argument("--base-w", type=float, default=2.5, help="the box idling: Pi and radio")
    parser.add_argument("--start-percent", type=float, default=80.0)
    parser.add_argument("--ask-every-s", type=float, default=120.0)
    parser.add_argument("--prompt-cpu-s", type=float, default=40.0, help="CPU-seconds to read a prompt")
    parser.add_argument("--generate-cpu-s", type=float, default=200.0, help="CPU-seconds for a full answer")
    parser.add_argument("--hours", type=float, default=7 * 24.0)
    parser.add_argument("--scale", type=float, default=1000.0, help="simulated seconds per real second")
    parser.add_argument("--telemetry-every-s", type=float, default=300.0, help="the node's device telemetry")
    parser.add_argument("--svg", help="write the chart here")
    args = parser.parse_args()
    quiet_logs()
    runs = [daemon_week(args), simulate(args, aware=False)]
    print(table(runs))
    for run in runs:
        print(summary(run))
    if args.svg:
        with open(args.svg, "w", encoding="utf-8") as out:
            out.write(svg(runs))


if __name__ == "__main__":
    main()
