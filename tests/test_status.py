"""`meshbot status` tells a running daemon from a stopped one by its heartbeat, and never creates a store.

A watchdog runs `meshbot status` and reads its exit code: 0 only while a daemon runs and is healthy.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshbot.app.cli import main
from meshbot.app.status import STALE_AFTER_S, liveness
from meshbot.sim.node.node import VirtualNode
from meshbot.storage.store import Store
from tests.daemon_proc import REPO, DaemonProcess, write_config
from tests.fakes import BOT_NUM
from tests.faults_support import PEERS


def status(capsys: pytest.CaptureFixture[str], config: Path, *flags: str) -> tuple[int, str, str]:
    """Run `meshbot status --config CONFIG [flags]` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(["status", "--config", str(config), *flags])
    out, err = capsys.readouterr()
    return code, out, err


def status_json(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, dict[str, Any]]:
    """`meshbot status --json`: exit code and the object."""
    code, out, _ = status(capsys, config, "--json")
    return code, json.loads(out)


def digest(path: Path) -> str:
    """The database file's bytes, hashed: a read-only status must leave them alone."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def node() -> Iterator[VirtualNode]:
    node = VirtualNode(BOT_NUM, short_name="BOT", modem_preset="SHORT_TURBO", region="US", peers=PEERS)
    node.start()
    yield node
    node.stop()


def test_status_is_healthy_while_the_daemon_runs_and_unhealthy_once_it_stopped(
    tmp_path: Path, node: VirtualNode, capsys: pytest.CaptureFixture[str]
) -> None:
    with DaemonProcess(tmp_path, f"127.0.0.1:{node.port}", {"radio": {"connect_timeout_s": 20}}) as proc:
        proc.start()
        code, out, _ = status(capsys, proc.config_path)
        assert code == 0, out
        assert out.startswith(f"running: pid {proc.proc.pid} on ") and out.rstrip().endswith("healthy")
        code, report = status_json(capsys, proc.config_path)
        assert code == 0 and report["running"] is True and report["healthy"] is True
        assert report["pid"] == proc.proc.pid
        assert time.time() - report["last_heartbeat_at"] < STALE_AFTER_S
        assert proc.stop() == 0
    code, out, _ = status(capsys, proc.config_path)
    assert code == 1
    assert out.splitlines()[0].startswith("NOT RUNNING: it stopped cleanly; last ran ")
    assert "radio connected since" not in out  # the last radio event says nothing about now
    assert out.rstrip().endswith("UNHEALTHY: not running")
    code, report = status_json(capsys, proc.config_path)
    assert code == 1 and report["running"] is False and report["pid"] is None
    assert report["last_heartbeat_at"] is not None and report["problems"] == ["not running"]


def test_a_stale_heartbeat_means_the_daemon_is_gone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What kill -9 leaves behind: a heartbeat row that is neither fresh nor marked stopped.
    db = tmp_path / "meshbot.db"
    then = time.time() - STALE_AFTER_S - 30
    with Store(db, wall=lambda: then) as store:
        store.heartbeat(4242, queue_depth=2, paused=False)
        store.record_event("radio-up")
    config = write_config(tmp_path / "meshbot.toml", {"store": {"path": str(db)}})
    before = digest(db)
    code, out, _ = status(capsys, config)
    assert code == 1
    assert out.splitlines()[0].startswith("NOT RUNNING: its heartbeat stopped (pid 4242 killed or hung?); last ran ")
    code, report = status_json(capsys, config)
    assert code == 1 and report["running"] is False and report["pid"] is None
    assert report["last_heartbeat_at"] == pytest.approx(then)
    assert digest(db) == before  # read-only: not even a checkpoint


def test_a_store_no_daemon_ever_used_is_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "meshbot.db"
    Store(db).close()
    config = write_config(tmp_path / "meshbot.toml", {"store": {"path": str(db)}})
    code, out, _ = status(capsys, config)
    assert code == 1 and out.startswith("NOT RUNNING: no daemon has run with this store\n")


@pytest.mark.parametrize("flags", [(), ("--json",)])
def test_a_missing_store_is_an_error_and_no_file_is_created(tmp_path: Path, flags: tuple[str, ...]) -> None:
    # Run from a directory with no store, as an operator in the wrong folder would: the default path is relative.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBOT_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "meshbot", "status", *flags], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert str(tmp_path / "meshbot.db") in done.stderr and "store.path" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_heartbeat_counts_as_running_for_three_beats_then_not() -> None:
    """The row a kill -9 leaves, read at later instants (no waiting 15 s); a stop mark ends it at once."""
    beat = {"pid": 99, "host": "h", "beat_at": 1000.0, "queue_depth": 0, "paused": 0, "stopped": 0}
    assert liveness(beat, 1000.0 + STALE_AFTER_S)["running"] is True
    assert liveness(beat, 1000.0 + STALE_AFTER_S + 0.1)["running"] is False
    assert liveness({**beat, "stopped": 1}, 1000.0)["running"] is False
    assert liveness(None, 1000.0)["last_heartbeat_at"] is None
