"""One daemon per store (issue 17): a second `meshbot run` on the same store exits at start, naming the holder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbot.storage.lock import StoreLock, StoreLocked
from tests.daemon_proc import REPO, DaemonProcess, write_config
from tests.mqtt_support import ROOT, Broker


def test_a_second_lock_on_one_store_names_the_pid_that_holds_it(tmp_path: Path) -> None:
    store = str(tmp_path / "bot.db")
    with StoreLock(store):
        with pytest.raises(StoreLocked, match=rf"in use by another meshbot \(PID {os.getpid()}\)"):
            StoreLock(store).acquire()
        StoreLock(str(tmp_path / "other.db")).acquire()  # another store is another lock
    with StoreLock(store):  # released: taken again at once
        pass


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def sections(broker: Broker, store: Path) -> dict[str, dict[str, object]]:
    return {
        "radio": {"transport": "mqtt"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "root": ROOT, "channel": "LongFast", "max_backoff_s": 1.0},
        "store": {"path": str(store)},
    }


@pytest.mark.model
@pytest.mark.slow
def test_a_second_daemon_on_the_same_store_exits_at_start_and_the_first_runs_on(broker: Broker, tmp_path) -> None:
    store = tmp_path / "bot.db"
    (tmp_path / "one").mkdir()
    with DaemonProcess(tmp_path / "one", "127.0.0.1:1", sections(broker, store)) as first:
        first.start()
        assert first.proc is not None
        config = write_config(tmp_path / "second.toml", {**sections(broker, store), "log": {"format": "json"}})
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBOT_")}
        second = subprocess.run(
            [sys.executable, "-m", "meshbot", "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        lines = [json.loads(line) for line in second.stderr.splitlines() if line.startswith("{")]
        errors = [line for line in lines if line.get("level") == "ERROR"]
        assert len(errors) == 1 and errors[0].get("event") == "store-locked", second.stderr
        assert f"PID {first.proc.pid}" in errors[0]["msg"]
        assert not any(e.get("event") in ("radio-connecting", "radio-up") for e in lines)  # stopped before the broker
        assert first.alive and not [e for e in first.events() if e.get("event") == "radio-down"]
        first.kill()  # a crashed daemon's lock goes with it
        (tmp_path / "two").mkdir()
        with DaemonProcess(tmp_path / "two", "127.0.0.1:1", sections(broker, store)) as again:
            again.start()
            assert again.alive
