"""A node whose settings keep it from answering is named at connect, in the log and in `meshbot status`."""

from __future__ import annotations

import logging
import queue
from pathlib import Path

import pytest

from meshbot.app.cli import main
from meshbot.app.compose import build_daemon
from meshbot.core.config import RadioConfig, load_config
from meshbot.core.domain import AckStatus, Outbound, SendResult
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


def test_a_node_with_its_transmitter_off_never_puts_a_dm_on_air() -> None:
    # As the firmware does: the packet is accepted, dropped at the radio, and given up after its retries.
    node = VirtualNode(BOT_NUM, short_name="BOT", region="US", peers=PEERS, tx_enabled=False, retransmit_s=0.05)
    node.start()
    radio = MeshtasticRadio(RadioConfig(host=f"127.0.0.1:{node.port}", connect_timeout_s=10))
    results: queue.Queue[SendResult] = queue.Queue()
    try:
        radio.start(lambda _: None, lambda _: None)
        assert radio.local_node().problems() == ("cannot-transmit",)
        radio.send(Outbound("anyone there?", PEERS[0][0], want_ack=True), results.put)
        result = results.get(timeout=5)
        assert (result.status, result.reason) == (AckStatus.NAKED, "MAX_RETRANSMIT")
        assert node.air.transmissions == []
    finally:
        radio.close()
        node.stop()
