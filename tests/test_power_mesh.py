"""Power modes on a live virtual node: the bot's own node's telemetry moves the mode, and the bot answers by it."""

from __future__ import annotations

import io
import logging
import time

import pytest

from meshbot.app.status import run_status
from meshbot.core.power import Mode
from meshbot.sim.battery import BatteryFeed, SolarBattery
from meshbot.sim.rules.telemetry import device_metrics_packet
from tests.conftest import wait_until
from tests.fakes import AI_TAG, BOT_NUM
from tests.faults_support import LONG_ANSWER, PEER_NUMS, Bench, events
from tests.faults_support import bench as bench  # a fixture: the alias marks the import as used

USER = PEER_NUMS[1]


@pytest.fixture
def power_bench(bench) -> Bench:
    b = bench(**{"power.interval_s": 2.0})  # simulated seconds: the bench's clock runs 20x
    b.start_daemon()
    wait_until(lambda: b.settled(b.daemons[0]), timeout=20)
    return b


class Battery:
    """The bot's node reporting its battery level by telemetry, as the firmware does every few minutes."""

    def __init__(self, b: Bench) -> None:
        self.b, self.packet_id = b, 5000

    def report(self, level: int) -> Mode:
        """Send a reading and wait until the daemon's monitor has read it; the mode it is in then."""
        self.packet_id += 1
        self.b.node.inject_packet(device_metrics_packet(BOT_NUM, self.packet_id, level, 3.7, when=int(time.time())))
        power = self.b.daemons[0].power
        assert power is not None
        expected = None if level > 100 else float(level)
        wait_until(lambda: power.reading.battery_percent == expected and power.reading.external_power == (level > 100))
        return power.mode()


def test_each_mode_is_entered_and_left_with_hysteresis_from_the_nodes_telemetry(
    power_bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    battery = Battery(power_bench)
    levels = [50, 38, 42, 46, 12, 18, 21, 101]
    modes = [battery.report(level) for level in levels]
    assert modes == ["normal", "economy", "economy", "normal", "sleep", "sleep", "economy", "normal"]
    assert [r.mode for r in events(caplog, "power-mode")] == ["economy", "normal", "sleep", "economy", "normal"]
    out = io.StringIO()
    run_status(power_bench.cfg, out)
    assert "power: normal since" in out.getvalue()


def test_in_economy_an_answer_fits_one_fragment_and_the_token_cap_is_smaller(
    power_bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b = power_bench
    b.model.queue(LONG_ANSWER, LONG_ANSWER)
    b.ask(USER, 1, "tell me about lora")
    wait_until(lambda: len([p for p in b.node.sent if p.reply_id == 1]) == 2, timeout=20)  # normal: two
    assert Battery(b).report(30) is Mode.ECONOMY
    b.ask(USER, 2, "tell me about lora again")
    wait_until(lambda: len(events(caplog, "answered")) == 2, timeout=20)
    time.sleep(0.5)  # 10 s simulated: any second fragment would have gone by now
    economy = [p for p in b.node.sent if p.reply_id == 2]
    assert len(economy) == 1 and len((economy[0].text or "").encode()) <= b.cfg.mesh.max_fragment_bytes
    assert [r.max_tokens for r in b.model.requests] == [b.model.requests[0].max_tokens, 96]
    assert b.model.requests[0].max_tokens > 96
    answered = events(caplog, "answered")
    assert all(r.energy_j is not None and r.energy_j >= 0 for r in answered)
    b.ask(USER, 3, "!status")
    wait_until(lambda: any(p.reply_id == 3 for p in b.node.sent), timeout=20)
    status = next((p.text or "").removeprefix(AI_TAG) for p in b.node.sent if p.reply_id == 3)
    assert "power economy (battery 30%)" in status


def test_a_virtual_battery_draining_at_night_takes_the_bot_through_economy_to_sleep_and_an_sos_still_gets_through(
    power_bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    b = power_bench
    # A tiny battery at midnight, so the sim's minutes do what a night does to a real one.
    battery = SolarBattery(capacity_wh=0.01, panel_w=1.0, base_w=0.2, level_wh=0.0045)
    feed = BatteryFeed(b.node, battery, b.clock, every_s=4.0, start_s=0.0)
    feed.start()
    try:
        wait_until(lambda: [r.mode for r in events(caplog, "power-mode")] == ["economy", "sleep"], timeout=30)
        b.ask(USER, 40, "SOS we are lost in the dark")
        wait_until(lambda: any(p.reply_id == 40 and "Emergency heard" in (p.text or "") for p in b.node.sent), 20)
    finally:
        feed.stop()
    levels = [percent for _, percent in feed.reported]
    assert levels[0] == pytest.approx(45) and levels == sorted(levels, reverse=True)
