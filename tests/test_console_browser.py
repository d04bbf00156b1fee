"""The console page in a real headless Chromium: it loads without errors and plots the daemon's own data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser_support import Chromium
from tests.console_support import WAIT, scrape
from tests.console_support import console_bot as console_bot  # a fixture: the alias marks the import as used

CHARTS = """Array.from(document.querySelectorAll('.chart')).map(c => [c.id, Number(c.dataset.points || 0),
    c.dataset.max === '' || c.dataset.max === undefined ? null : Number(c.dataset.max), c.querySelectorAll('canvas').length])"""
ROWS = "Array.from(document.querySelectorAll('#questions tbody tr')).map(r => r.innerText)"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    chromium = Chromium(tmp_path)
    yield chromium
    chromium.close()


def _answered(bot, count: int, token: str | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while scrape(bot.url, token)["meshbot_questions_total{outcome=answered}"] < count:
        assert time.monotonic() < deadline, {k: v for k, v in scrape(bot.url, token).items() if "bucket" not in k}
        time.sleep(0.2)


def test_the_page_plots_the_daemon_s_data_without_errors(console_bot, browser: Chromium, tmp_path: Path) -> None:
    bot = console_bot(**{"console.token": "s3cret"})
    browser.call("Page.navigate", url=f"{bot.url}/?token=s3cret")
    assert browser.wait_for("document.body && document.body.dataset.loaded === '1'", WAIT), browser.errors()
    bot.ask("Alice", "What is LoRa?")
    bot.ask("Bob", "How far does a mesh reach?", after_s=5.0)
    # Bob's follow-up after his answer, as a person asks it: sent on a timer, a loaded machine could deliver it
    # inside the joining window of his first question, and the two became one.
    _answered(bot, 2, "s3cret")
    bot.ask("Bob", "Who runs it?", after_s=3.0)
    _answered(bot, 3, "s3cret")
    # The table and the charts come from the same feed: once it lists the three answers, the charts have them too.
    rows = browser.wait_for(f"{ROWS}.filter(r => r.includes('answered')).length >= 3 && {ROWS}", 15.0)
    assert rows and all("answered" in r for r in rows), browser.evaluate(ROWS)
    assert not any("LoRa" in r for r in rows)  # no question text by default
    charts = {name: (points, top, canvases) for name, points, top, canvases in browser.evaluate(CHARTS)}
    assert sum(1 for points, _, canvases in charts.values() if points > 0 and canvases > 0) >= 6, charts
    above_zero = {name for name, (points, top, _) in charts.items() if points > 0 and top is not None and top > 0}
    wanted = {"chart-airtime", "chart-questions", "chart-acks", "chart-fragments", "chart-nodes", "chart-chutil"}
    assert wanted <= above_zero, charts
    assert charts["chart-ttff"][0] > 0, charts  # p50 and p95 of the three answers (the echo model is quick: near 0 s)
    shot = browser.screenshot(tmp_path / "console.png")
    assert shot.stat().st_size > 20_000
    assert browser.errors() == []


def test_the_page_is_readable_on_a_phone(console_bot, browser: Chromium, tmp_path: Path) -> None:
    bot = console_bot()
    browser.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
    browser.call("Page.navigate", url=bot.url)
    assert browser.wait_for("document.body && document.body.dataset.loaded === '1'", WAIT), browser.errors()
    widths = browser.evaluate(
        "[document.documentElement.scrollWidth, ...Array.from(document.querySelectorAll('.chart canvas')).map(c => c.getBoundingClientRect().right)]"
    )
    assert widths[0] <= 390 and all(right <= 390 for right in widths[1:]), widths  # nothing scrolls sideways
    browser.screenshot(tmp_path / "console-phone.png")
    assert browser.errors() == []
