"""Run `python -m meshbot run` as a child process for fault tests: start, read its JSON log, kill, restart.

The daemon logs one JSON object per line to stderr (`--log-format json`); each run appends to one
log file in the test's tmp directory, so a test can read what every incarnation did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STARTED = "started"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write a TOML config file from {section: {key: value}}."""
    lines: list[str] = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in keys.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class DaemonProcess:
    """One meshbot daemon as a child process; `start` it again after `kill` to resume from its store."""

    def __init__(self, workdir: Path, host: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
        self.workdir = workdir
        self.host = host
        merged = {k: dict(v) for k, v in sections.items()}
        merged.setdefault("store", {}).setdefault("path", str(workdir / "meshbot.db"))
        merged.setdefault("log", {}).update({"format": "json"})
        self.store_path = Path(merged["store"]["path"])
        self.config_path = write_config(workdir / "meshbot.toml", merged)
        self.log_path = workdir / "daemon.log.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        """Spawn the daemon and wait for this run's "started" event."""
        before = self._count(STARTED)
        self.spawn()
        self.wait_for(lambda events: sum(e.get("event") == STARTED for e in events) > before, timeout)

    def spawn(self) -> None:
        """Spawn the daemon without waiting for anything (it may be connecting for a long time)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = [
            sys.executable,
            "-m",
            "meshbot",
            "run",
            "--config",
            str(self.config_path),
            "--host",
            self.host,
            "--log-format",
            "json",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBOT_")}
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )
        self.runs += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for a graceful exit (SIGKILL if it hangs); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def signal_and_wait(self, sig: signal.Signals, timeout: float = 30.0) -> tuple[int | None, float]:
        """Send `sig`; the exit code (None if still running after `timeout`) and the seconds it took."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        sent = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - sent
        return self.proc.returncode, time.monotonic() - sent

    @property
    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- the log ---------------------------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        """Every JSON log object written so far, by every run (non-JSON lines skipped)."""
        if not self.log_path.exists():
            return []
        return list(_parse_lines(self.log_path.read_bytes()))

    def _count(self, event: str) -> int:
        return sum(e.get("event") == event for e in self.events())

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> list[dict[str, Any]]:
        """Poll the log until `predicate(events)` holds; fail with the log's tail if the child dies or times out."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if predicate(events):
                return events
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout:.0f}s; daemon log tail:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 30) -> str:
        """The last lines of the log, for failure messages."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _parse_lines(data: bytes) -> Iterator[dict[str, Any]]:
    for raw in data.splitlines():
        try:
            item = json.loads(raw)
        except ValueError:  # a partial last line, or a library's plain-text warning
            continue
        if isinstance(item, dict):
            yield item
