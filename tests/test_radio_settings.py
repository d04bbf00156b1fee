"""A node whose settings keep it from answering is named at connect, in the log and in `meshbot status`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from meshbot.app.cli import main
from meshbot.app.compose import build_daemon
from meshbot.core.config import load_config
from meshbot.radios.meshtastic_lib import MeshtasticRadio
from meshbot.sim.node.node import VirtualNode
from tests.daemon_proc import write_config
from tests.fakes import BOT_NUM, FakeModel
from tests.faults_support import PEERS, events


@pytest.mark.parametrize(
    ("settings", "code", "words"),
    [
        ({"tx_enabled": False}, "cannot-transmit", "lora.tx_enabled true"),
        ({"region": "UNSET"}, "no-region", "lora.region"),
    ],
)
def test_a_node_that_cannot_answer_gets_a_warning_at_connect_and_in_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], settings, code, words
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    node = VirtualNode(BOT_NUM, short_name="BOT", peers=PEERS, **{"region": "US", **settings})
    node.start()
    sections = {"radio": {"host": f"127.0.0.1:{node.port}"}, "store": {"path": str(tmp_path / "meshbot.db")}}
    config = write_config(tmp_path / "meshbot.toml", sections)
    cfg = load_config(
        overrides={"radio.host": sections["radio"]["host"], "store.path": str(tmp_path / "meshbot.db")}, environ={}
    )
    daemon = build_daemon(cfg, radio=MeshtasticRadio(cfg.radio), model=FakeModel())
    daemon.start()
    try:
        (warning,) = events(caplog, "radio-cannot-send")
        assert warning.levelno == logging.WARNING and warning.reason == code and words in warning.getMessage()
        capsys.readouterr()
        exit_code = main(["status", "--config", str(config)])
        out = capsys.readouterr().out
        assert exit_code == 1  # a watchdog sees it: the bot is up but cannot serve
        assert "radio WARNING: " in out and words in out
        assert out.rstrip().endswith(f"UNHEALTHY: radio {code.replace('-', ' ')}")
    finally:
        daemon.stop(grace_s=2.0)
        node.stop()


def test_a_node_that_can_transmit_gets_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    node = VirtualNode(BOT_NUM, short_name="BOT", region="EU_868", peers=PEERS)
    node.start()
    cfg = load_config(overrides={"radio.host": f"127.0.0.1:{node.port}", "store.path": ":memory:"}, environ={})
    daemon = build_daemon(cfg, radio=MeshtasticRadio(cfg.radio), model=FakeModel())
    daemon.start()
    try:
        assert events(caplog, "radio-up") and not events(caplog, "radio-cannot-send")
        assert daemon.store.status()["radio_problems"] == []
    finally:
        daemon.stop(grace_s=2.0)
        node.stop()
