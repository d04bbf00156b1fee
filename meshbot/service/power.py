"""Power awareness while running: read the sources on a timer, keep the mode, measure energy per answer.

Sources (each optional, `[power]`): the bot's own node's device metrics from the radio's node DB (there at
connect, refreshed by the node's telemetry while running); this machine's /sys/class/power_supply and
/sys/class/thermal (the root injectable for tests); a command that prints a battery percent. The intake and
the worker ask `mode()`; the monitor logs `power-mode` once on each entry and records it for `meshbot status`.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from meshbot.core.config import PowerConfig
from meshbot.core.domain import Clock
from meshbot.core.events import Event
from meshbot.core.power import (
    DeviceMetricsSource,
    Mode,
    Reading,
    combine,
    next_mode,
    parse_percent,
    reading_of_metrics,
    reading_of_percent,
)
from meshbot.storage.store import Store

if TYPE_CHECKING:
    from meshbot.service.daemon import Daemon

log = logging.getLogger(__name__)

# Charger states in /sys/class/power_supply/*/status that mean the battery is not draining.
_ON_EXTERNAL = frozenset({"charging", "full"})


def read_sysfs(root: Path) -> list[Reading]:
    """Batteries and mains supplies under root/class/power_supply, CPU heat under root/class/thermal."""
    readings = []
    for supply in sorted((root / "class" / "power_supply").glob("*")):
        kind = _read(supply / "type")
        if kind == "Battery":
            capacity = _read(supply / "capacity")
            status = (_read(supply / "status") or "").casefold()
            if capacity is not None and capacity.strip().lstrip("-").isdigit():
                readings.append(Reading(float(capacity), status in _ON_EXTERNAL, source=f"sysfs:{supply.name}"))
        elif kind in ("Mains", "USB") and _read(supply / "online") == "1":
            readings.append(Reading(external_power=True, source=f"sysfs:{supply.name}"))
    temps = []
    for zone in sorted((root / "class" / "thermal").glob("thermal_zone*")):
        raw = _read(zone / "temp")
        if raw is not None and raw.lstrip("-").isdigit():
            temps.append(int(raw) / 1000.0)  # millidegrees Celsius
    if temps:
        readings.append(Reading(cpu_temp_c=max(temps), source="sysfs:thermal"))
    return readings


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


class PowerSources:
    """Everything `[power]` names, read at once into readings."""

    def __init__(self, cfg: PowerConfig, radio: DeviceMetricsSource | None = None, node: int | None = None) -> None:
        self.cfg = cfg
        self._radio = radio if cfg.radio else None
        self._node = node

    def any(self) -> bool:
        """True when at least one source is configured (else there is nothing to read on a timer)."""
        return (self._radio is not None and self._node is not None) or self.cfg.host or bool(self.cfg.command)

    def read(self) -> list[Reading]:
        """One reading per source that answered; a failing source raises (the monitor logs it)."""
        readings: list[Reading] = []
        if self._radio is not None and self._node is not None:
            found = reading_of_metrics(self._radio.device_metrics_of(self._node))
            if found is not None:
                readings.append(found)
        if self.cfg.host:
            readings.extend(read_sysfs(Path(self.cfg.sysfs_root)))
        if self.cfg.command:
            readings.append(self._command(self.cfg.command))
        return readings

    def _command(self, command: str) -> Reading:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=self.cfg.command_timeout_s, check=True
        )
        value = parse_percent(done.stdout)
        if value is None:
            raise ValueError(f"[power] command printed no percent: {done.stdout.strip()[:60]!r}")
        return reading_of_percent(value, "command")


_TICK_S = 0.25  # real seconds between looks at the clock


class PowerMonitor:
    """Reads the sources every `interval_s` and keeps the mode; a daemon companion (started and stopped with it)."""

    def __init__(self, cfg: PowerConfig, sources: PowerSources, clock: Clock, store: Store | None = None) -> None:
        self.cfg = cfg
        self._sources = sources
        self._clock = clock
        self._store = store
        self._mode = Mode.NORMAL
        self.reading = Reading()
        self.energy = EnergyMeter(cfg)
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mode(self) -> Mode:
        """The current mode (normal until a source says otherwise)."""
        return self._mode

    def status_line(self) -> str:
        """For !status: the mode, what the sources said, and the energy spent on answers ("" with no source)."""
        if not self._sources.any() or self.reading == Reading():
            return ""  # nothing has said anything about power: nothing to tell
        return f"power {self._mode.value} ({self.reading.describe()}), answers {self.energy.total_j:.0f} J"

    def poll(self) -> Mode:
        """Read every source once and move the mode; a failing source is logged once per outage."""
        try:
            readings = self._sources.read()
        except Exception as exc:  # a dead UPS HAT or a hung command: keep the last mode
            if not self._failing:
                log.warning(
                    "power source unreadable: %s; the mode stays %s",
                    exc,
                    self._mode.value,
                    extra={"event": Event.POWER_SOURCE_ERROR},
                )
            self._failing = True
            return self._mode
        self._failing = False
        self.reading = combine(readings)
        self._enter(next_mode(self._mode, self.reading, self.cfg))
        return self._mode

    def _enter(self, mode: Mode) -> None:
        if mode is self._mode:
            return
        before, self._mode = self._mode, mode
        level = logging.WARNING if mode is not Mode.NORMAL else logging.INFO
        log.log(
            level,
            "power mode %s (was %s): %s",
            mode.value,
            before.value,
            self.reading.describe(),
            extra={
                "event": Event.POWER_MODE,
                "mode": mode.value,
                "battery_percent": self.reading.battery_percent,
                "cpu_temp_c": self.reading.cpu_temp_c,
            },
        )
        if self._store is not None:
            self._store.record_event(f"power-{mode.value}", self.reading.battery_percent or 0.0)

    # -- a daemon companion ------------------------------------------------------------------------
    def start(self, daemon: Daemon | None = None) -> None:
        """Read once now (the node's metrics from connect), then on a timer."""
        if not self._sources.any():
            return  # nothing to read: normal for good
        self.poll()
        self._thread = threading.Thread(target=self._run, name="meshbot-power", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Ticks in real time and reads by the injected clock: waiting *on* a virtual clock would race it ahead
        # (every wait elapses at once), and other threads' pacing would see hours pass in a test's second.
        due = self._clock.now() + self.cfg.interval_s
        while not self._stop.wait(_TICK_S):
            if self._clock.now() >= due:
                self.poll()
                due = self._clock.now() + self.cfg.interval_s

    def quiesce(self, daemon: Daemon | None = None) -> None:
        """Stop reading."""
        self._stop.set()

    def stop(self, daemon: Daemon | None = None) -> None:
        """Stop reading and wait for the timer thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)


class EnergyMeter:
    """Energy per answer: RAPL counters where readable, else the process's CPU-seconds × `watts_per_core`."""

    def __init__(self, cfg: PowerConfig, cpu_seconds: Callable[[], float] = time.process_time) -> None:
        self._watts = cfg.watts_per_core
        self._cpu = cpu_seconds
        self._rapl = [p for p in sorted(Path(cfg.powercap_root).glob("intel-rapl:*")) if p.name.count(":") == 1]
        self._lock = threading.Lock()
        self.total_j = 0.0

    def _rapl_uj(self) -> list[tuple[int, int]] | None:
        """(energy, wrap range) of each package domain, or None when any is unreadable (often root-only)."""
        out = []
        for zone in self._rapl:
            energy, wrap = _read(zone / "energy_uj"), _read(zone / "max_energy_range_uj")
            if energy is None or not energy.isdigit():
                return None
            out.append((int(energy), int(wrap) if wrap and wrap.isdigit() else 0))
        return out or None

    def begin(self) -> tuple[list[tuple[int, int]] | None, float]:
        """A mark before an answer is generated."""
        return self._rapl_uj(), self._cpu()

    def end(self, mark: tuple[list[tuple[int, int]] | None, float]) -> tuple[float, str]:
        """Joules since `mark`, and how they were found ("rapl" or "cpu-estimate"); added to the total."""
        rapl_before, cpu_before = mark
        rapl_after = self._rapl_uj() if rapl_before is not None else None
        if rapl_before is not None and rapl_after is not None and len(rapl_after) == len(rapl_before):
            micro = sum(
                (after - before) % wrap if wrap else max(after - before, 0)
                for (before, wrap), (after, _) in zip(rapl_before, rapl_after, strict=True)
            )
            joules, how = micro / 1e6, "rapl"
        else:
            joules, how = max(self._cpu() - cpu_before, 0.0) * self._watts, "cpu-estimate"
        with self._lock:
            self.total_j += joules
        return joules, how
