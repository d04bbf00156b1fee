"""The solar week through the real daemon: a virtual node on a sped-up clock reports a virtual battery as its own
device telemetry, the daemon's power monitor reads it through the radio, the daemon's modes decide, and the
battery drains by the energy the daemon reports per answer.

The model is scripted with a fixed CPU cost (`prompt_cpu_s` to read a prompt, `token_cpu_s` a token, written
`cores` at a time on the sim's clock), so the daemon's energy meter measures a Pi's work in a week that runs
at speed. Used by `bench/solar_week.py` and `tests/test_solar.py`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshbot.app.compose import build_daemon
from meshbot.core.clock import ScaledClock
from meshbot.core.config import Config, load_config
from meshbot.core.domain import Generation, GenerationStats
from meshbot.core.power import Mode
from meshbot.models.base import BaseModel
from meshbot.radios.meshtastic_lib import MeshtasticRadio
from meshbot.service.daemon import Daemon
from meshbot.service.power import EnergyMeter
from meshbot.sim.battery import BatteryFeed, SolarBattery
from meshbot.sim.node.node import VirtualNode

BOT = 0x0B07_5011
ASKERS = [(0x0A50_0000 + i, f"Hiker {i}", f"H{i}") for i in range(7)]
RESCUE = (0x0A50_0099, "Lost hiker", "LOST")  # asks nothing but SOS: an emergency opens a follow-up window
CHUNK = 16  # tokens per streamed piece
WORDS = "the ridge trail is open from dawn so carry water and a map and tell someone where you go".split()


class CpuModel(BaseModel):
    """A scripted model with a fixed CPU cost per prompt and per token; it writes to its token cap."""

    name = "scripted-cpu"
    deterministic = True

    def __init__(self, clock: ScaledClock, prompt_cpu_s: float, token_cpu_s: float, cores: int = 4) -> None:
        self._clock, self.prompt_cpu_s, self.token_cpu_s, self.cores = clock, prompt_cpu_s, token_cpu_s, cores
        self._lock = threading.Lock()
        self._cpu_s = 0.0
        self._owed_s = 0.0  # wall time not yet slept: a sleep per token would cost more than the token at speed
        self.tokens: list[int] = []  # tokens written per answer, economy's and full ones

    def cpu_seconds(self) -> float:
        """The CPU-seconds this model has used: what the daemon's energy meter reads in place of the process's."""
        with self._lock:
            return self._cpu_s

    def _work(self, cpu_s: float) -> None:
        with self._lock:
            self._cpu_s += cpu_s
        self._owed_s += cpu_s / self.cores
        if self._owed_s >= 1.0:
            self._clock.sleep(self._owed_s)
            self._owed_s = 0.0

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        """Read the prompt, then write `max_tokens` tokens (fewer if the answer's fragments fill first).

        Tokens come `CHUNK` to a piece: at 1000x a millisecond of the daemon's real work on each piece is a
        simulated second, so token-by-token pieces would make the answers far slower than their CPU cost says.
        """
        started = self._clock.now()
        self._work(self.prompt_cpu_s)
        self.tokens.append(0)
        for first in range(0, request.max_tokens, CHUNK):
            n = min(CHUNK, request.max_tokens - first)
            self._work(self.token_cpu_s * n)
            stats.completion_tokens += n
            self.tokens[-1] += n
            stats.first_token_s = stats.first_token_s or self._clock.now() - started
            words = (WORDS[i % len(WORDS)] + ("." if i % 12 == 11 else "") for i in range(first, first + n))
            yield (" " if first else "") + " ".join(words)
        stats.total_s = self._clock.now() - started


@dataclass
class Load:
    """What the week asks: a question every `ask_every_s`, an emergency every hour on the half hour."""

    ask_every_s: float = 120.0
    sos_every_s: float = 3600.0
    sos_at_s: float = 1800.0


@dataclass
class Asked:
    """One text the week sent the bot."""

    sender: int
    packet_id: int
    at_s: float  # sim seconds since the week began
    emergency: bool


@dataclass
class Trace:
    """The battery and the daemon's mode once a minute, and every text asked."""

    percent: list[float] = field(default_factory=list)
    modes: list[Mode] = field(default_factory=list)
    asked: list[Asked] = field(default_factory=list)

    def sample(self, percent: float, mode: Mode) -> None:
        """One step's battery level and mode."""
        self.percent.append(percent)
        self.modes.append(mode)


def daemon_config(port: int, folder: Path, overrides: dict[str, Any] | None = None) -> Config:
    """The daemon's defaults (the `[power]` thresholds untouched), on the virtual node, answering open."""
    settings: dict[str, Any] = {
        "radio.host": f"127.0.0.1:{port}",
        "radio.connect_timeout_s": 20,
        "store.path": str(folder / "meshbot.db"),
        "answers.mode": "open",  # the scripted model writes no facts to ground
        "join.window_s": 0,
        "limits.repeat_window_s": 0,
        "power.powercap_root": str(folder / "no-rapl"),  # the scripted model's CPU-seconds, never this host's RAPL
        **(overrides or {}),
    }
    return load_config(overrides=settings, environ={})


class DaemonWeek:
    """A virtual node, the real daemon on it and a `BatteryFeed`, all on one `ScaledClock`."""

    def __init__(self, battery: SolarBattery, model_cost: tuple[float, float], scale: float, **cfg: Any) -> None:
        self.clock = ScaledClock(scale)
        self.battery = battery
        self.node = VirtualNode(
            BOT, short_name="SUN", modem_preset="SHORT_TURBO", region="US", peers=[*ASKERS, RESCUE],
            clock=self.clock, ack_delay_s=1.0 / scale,  # a neighbour ACKs a second (simulated) after it hears
        )  # fmt: skip
        self.model = CpuModel(self.clock, *model_cost)
        self._tmp = tempfile.TemporaryDirectory(prefix="meshbot-solar-")
        self.node.start()
        self.cfg = daemon_config(self.node.port, Path(self._tmp.name), cfg)
        self.daemon: Daemon | None = None
        self.feed: BatteryFeed | None = None

    def start(self, feed_every_s: float, start_s: float) -> None:
        """Connect the daemon; give its power monitor the model's CPU clock; start the node's battery reports."""
        radio = MeshtasticRadio(self.cfg.radio, backoff_s=(0.2, 1.0))
        self.daemon = daemon = build_daemon(self.cfg, radio=radio, model=self.model, clock=self.clock)
        power = daemon.power
        assert power is not None, "[power] is on by default"
        # The one energy meter the daemon has, reading the scripted model's CPU-seconds (the process's own would
        # count the simulator's threads, at speed).
        power.energy = EnergyMeter(self.cfg.power, self.model.cpu_seconds)
        daemon.start()
        _wait(lambda: self.node.client_connected and daemon.radio_up.is_set(), 30.0)
        self.feed = BatteryFeed(
            self.node, self.battery, self.clock, every_s=feed_every_s, start_s=start_s,
            spent_j=lambda: power.energy.total_j,
        )  # fmt: skip
        self.feed.start()

    def drive(self, hours: float, load: Load, trace: Trace, step_s: float = 60.0) -> None:
        """Send the load for `hours` of the sim's clock, sampling the battery and the mode every `step_s`."""
        assert self.daemon is not None and self.daemon.power is not None
        power, t0, n = self.daemon.power, self.clock.now(), 0
        next_ask, next_sos, next_sample = load.ask_every_s, load.sos_at_s, step_s
        samples = len(trace.percent) + round(hours * 3600 / step_s)
        while (now := self.clock.now() - t0) < hours * 3600:
            while next_sample <= now:  # a late wake-up fills each step it missed
                trace.sample(self.battery.percent(), power.mode())
                next_sample += step_s
            if now >= next_ask:
                n += 1
                sender = ASKERS[n % len(ASKERS)][0]
                trace.asked.append(Asked(sender, self.node.inject_text(sender, f"what about the trail #{n}?"), now,
                                         False))  # fmt: skip
                next_ask += load.ask_every_s
            if now >= next_sos:
                text = f"SOS hurt leg at the ridge, call {len(trace.asked)}"
                trace.asked.append(Asked(RESCUE[0], self.node.inject_text(RESCUE[0], text), now, True))
                next_sos += load.sos_every_s
            self.clock.sleep(5.0)
        while len(trace.percent) < samples:
            trace.sample(self.battery.percent(), power.mode())

    def stop(self) -> None:
        """Stop the feed, the daemon and the node."""
        if self.feed is not None:
            self.feed.stop()
        if self.daemon is not None:
            self.daemon.stop(grace_s=2.0)
        self.node.stop()
        self._tmp.cleanup()


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not connect to the virtual node")
        time.sleep(0.05)


def quiet_logs() -> None:
    """The daemon logs every answer and every emergency: at a week's pace, errors only."""
    logging.getLogger("meshbot").setLevel(logging.ERROR)


@dataclass
class Outcome:
    """What the bot did with the week's texts, from what its node sent."""

    answered: dict[str, int] = field(default_factory=lambda: {"full": 0, "one fragment": 0, "notice": 0, "none": 0})
    emergencies: list[tuple[int, bool]] = field(default_factory=list)  # (hour, heard and answered by the model)


def outcome(sent: list[Any], asked: list[Asked], cfg: Config) -> Outcome:
    """Each question as full (2+ fragments), one fragment, the sleep notice or none; each emergency by hour."""
    replies: dict[tuple[int, int], list[str]] = {}
    for p in sent:
        if p.reply_id is not None and p.outcome in ("ACK", "PENDING", "MAX_RETRANSMIT"):
            replies.setdefault((p.to, p.reply_id), []).append(p.text or "")
    out = Outcome()
    heard = cfg.emergency.reply
    for a in asked:
        texts = replies.get((a.sender, a.packet_id), [])
        if a.emergency:
            answered = any(heard in t for t in texts) and any(heard not in t for t in texts)
            out.emergencies.append((int(a.at_s // 3600), answered))
        elif any(cfg.power.notice in t for t in texts):
            out.answered["notice"] += 1
        else:
            kind = "none" if not texts else "one fragment" if len(set(texts)) == 1 else "full"
            out.answered[kind] += 1
    return out
