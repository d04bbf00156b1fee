"""The operator's console: /metrics scraped with prometheus_client's parser after real questions on the virtual mesh."""

from __future__ import annotations

import json
import time

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.config import ConfigError, load_config
from tests.console_support import WAIT, ConsoleBot, get, scrape
from tests.console_support import console_bot as console_bot  # a fixture: the alias marks the import as used


def wait_for(bot: ConsoleBot, predicate, timeout: float = WAIT) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(bot.url)
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_counters_move_after_real_questions(console_bot) -> None:
    bot = console_bot()
    before = scrape(bot.url)
    assert before["meshbot_questions_total{outcome=answered}"] == 0
    assert before["meshbot_radio_up{}"] == 1
    assert before["meshbot_airtime_budget_seconds{}"] > 0
    bot.ask("Alice", "What is LoRa?")
    bot.ask("Bob", "How far does a mesh reach?", after_s=5.0)  # not on air at once with Alice's
    after = wait_for(
        bot, lambda s: s["meshbot_questions_total{outcome=answered}"] >= 2 and s["meshbot_acks_total{}"] >= 2
    )
    assert after["meshbot_questions_total{outcome=answered}"] == 2
    assert after["meshbot_first_fragment_seconds_count{}"] == 2
    assert after["meshbot_answer_fragments_total{}"] >= 2
    assert after["meshbot_airtime_seconds_total{}"] > 0.05
    assert after["meshbot_acks_total{}"] >= 2  # the handsets ACK each DM fragment
    assert after["meshbot_model_tokens_total{}"] > 10
    assert after["meshbot_airtime_hour_seconds{}"] == pytest.approx(after["meshbot_airtime_seconds_total{}"], rel=0.01)


def test_a_refusal_and_the_last_questions_table_without_text(console_bot) -> None:
    bot = console_bot(**{"limits.per_node_burst": 1, "limits.per_node_per_hour": 1})
    bot.ask("Bob", "What is LoRa?")
    wait_for(bot, lambda s: s["meshbot_questions_total{outcome=answered}"] >= 1)
    bot.ask("Bob", "And what is a relay?")
    samples = wait_for(bot, lambda s: s["meshbot_questions_total{outcome=refused}"] >= 1)
    assert samples["meshbot_questions_total{outcome=refused}"] == 1
    status, body = get(f"{bot.url}/api/console.json")
    feed = json.loads(body)
    assert status == 200
    rows = feed["questions"]
    assert [r["outcome"] for r in rows] == ["refused", "answered"]
    assert rows[1]["asker"] == 0x0A000002 and rows[1]["hops"] == 0 and rows[1]["fragments"] >= 1
    assert "What is LoRa" not in body.decode()  # no question text unless show_text


def test_show_text_puts_the_question_in_the_table(console_bot) -> None:
    bot = console_bot(**{"console.show_text": True})
    bot.ask("Alice", "What is LoRa?")
    wait_for(bot, lambda s: s["meshbot_questions_total{outcome=answered}"] >= 1)
    rows = json.loads(get(f"{bot.url}/api/console.json")[1])["questions"]
    assert rows[0]["text"] == "What is LoRa?" and rows[0]["hops"] == 1


def test_the_history_comes_back_from_the_store_after_a_restart(console_bot, tmp_path) -> None:
    first = console_bot(tmp_path / "kept.db")
    first.ask("Bob", "What is LoRa?")
    wait_for(first, lambda s: s["meshbot_questions_total{outcome=answered}"] >= 1)
    first.daemon.stop(grace_s=2.0)
    second = console_bot(tmp_path / "kept.db", **{"console.show_text": False})
    feed = json.loads(get(f"{second.url}/api/console.json")[1])
    assert sum(feed["series"]["answered_h"][-1:]) >= 1  # the answered question of the first run is counted
    assert [r["outcome"] for r in feed["questions"]] == ["answered"]
    assert scrape(second.url)["meshbot_questions_total{outcome=answered}"] == 0  # counters start anew


def test_off_loopback_the_console_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="console.token"):
        load_config(overrides={"console.port": 9464, "console.host": "0.0.0.0"}, environ={})
    cfg = load_config(environ={"MESHBOT_CONSOLE_PORT": "9464", "MESHBOT_CONSOLE_HOST": "::1"})
    assert cfg.console.port == 9464 and cfg.console.token is None  # loopback: no token needed
    env = {"MESHBOT_CONSOLE_PORT": "9464", "MESHBOT_CONSOLE_HOST": "0.0.0.0", "MESHBOT_CONSOLE_TOKEN": "s3cret"}
    assert load_config(environ=env).console.token.get_secret_value() == "s3cret"


def test_with_a_token_every_route_but_the_static_files_asks_for_it(console_bot) -> None:
    bot = console_bot(**{"console.token": "s3cret"})
    for path in ("/", "/metrics", "/api/console.json"):
        assert get(bot.url + path)[0] == 401
        assert get(bot.url + path, token="wrong")[0] == 401
        assert get(bot.url + path, token="s3cret")[0] == 200
    assert get(bot.url + "/?token=s3cret")[0] == 200  # a browser's first visit
    assert get(bot.url + "/static/uPlot.iife.min.js")[0] == 200
    assert get(bot.url + "/static/../../etc/passwd")[0] == 404


def test_the_console_is_read_only_and_stops_with_the_daemon(console_bot) -> None:
    import urllib.request

    bot = console_bot()
    request = urllib.request.Request(bot.url + "/metrics", data=b"x", method="POST")
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("a POST was accepted")
    except urllib.error.HTTPError as err:
        assert err.code == 405
    url = bot.url
    started = time.monotonic()
    bot.daemon.stop(grace_s=2.0)
    assert time.monotonic() - started < 5.0
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/metrics", timeout=2)


def test_a_taken_port_is_a_clear_error_at_start(console_bot) -> None:
    bot = console_bot()
    port = int(bot.url.rsplit(":", 1)[1])
    cfg = load_config(overrides={"console.port": port, "radio.transport": "meshtastic"}, environ={})
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
        build_daemon(cfg, radio=None, model=bot.model)


def _exported(worker: str | None = None) -> dict[str, list[dict[str, str]]]:
    """Every sample name the console exports (counters moved once), with its labels."""
    from prometheus_client.parser import text_string_to_metric_families

    from meshbot.console.history import History
    from meshbot.console.metrics import ConsoleMetrics
    from meshbot.core.metrics import QuestionSeen

    metrics = ConsoleMetrics(History(60), worker)
    metrics.question(QuestionSeen("answered", 1))
    metrics.first_fragment(1.5)
    metrics.on_air(0.4, fragment=True)
    metrics.ack()
    metrics.nak("NO_RESPONSE")
    metrics.tokens(12)
    for gauge in (metrics.airtime_budget, metrics.airtime_hour, metrics.battery, metrics.channel_util):
        gauge.set(1)
    metrics.own(metrics.queue_depth).set(2)
    metrics.own(metrics.radio_up).set(1)
    metrics.air_util_tx.set(1)
    metrics.nodes_heard.labels(window="1h").set(3)
    families = text_string_to_metric_families(metrics.exposition().decode())
    samples: dict[str, list[dict[str, str]]] = {}
    for family in families:
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    return samples


def test_the_names_are_the_issue_s_and_each_worker_labels_only_its_own() -> None:
    names = _exported()
    wanted = {
        "meshbot_questions_total", "meshbot_first_fragment_seconds_bucket", "meshbot_answer_fragments_total",
        "meshbot_airtime_seconds_total", "meshbot_airtime_budget_seconds", "meshbot_queue_depth", "meshbot_acks_total",
        "meshbot_naks_total", "meshbot_radio_up", "meshbot_model_tokens_total", "meshbot_nodes_heard",
        "meshbot_node_battery_percent", "meshbot_node_channel_utilization_percent", "meshbot_node_air_util_tx_percent",
    }  # fmt: skip
    assert wanted <= set(names)
    assert "worker" not in str(names)
    labelled = _exported("worker-2")
    assert {"outcome": "answered", "worker": "worker-2"} in labelled["meshbot_questions_total"]
    assert labelled["meshbot_queue_depth"] == [{"worker": "worker-2"}]
    for shared in ("meshbot_airtime_budget_seconds", "meshbot_airtime_hour_seconds", "meshbot_nodes_heard"):
        assert all("worker" not in labels for labels in labelled[shared])  # the same on every worker: no label


def test_the_grafana_dashboard_uses_only_exported_metrics() -> None:
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json").read_text())
    used = {name for p in dashboard["panels"] for t in p["targets"] for name in re.findall(r"meshbot_\w+", t["expr"])}
    assert len(used) >= 12
    assert used <= set(_exported())
