"""A `meshbot` command as a child process in a folder of its own, its output lines collected as they come."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from meshbot.app.configfile import DEFAULT_CONFIG_PATHS

REPO = Path(__file__).resolve().parents[1]


def clean_env(extra: Mapping[str, str], workdir: Path) -> dict[str, str]:
    """The caller's environment without MESHBOT_* or PYTHONPATH, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBOT_") and k != "PYTHONPATH"}
    if any(path.is_file() for path in DEFAULT_CONFIG_PATHS) and "MESHBOT_CONFIG" not in extra:
        # A deployed /etc/meshbot/meshbot.toml on this machine must not steer the test: an empty file instead.
        empty = workdir / "empty.toml"
        empty.write_text("", encoding="utf-8")
        env["MESHBOT_CONFIG"] = str(empty)
    env.update(extra)
    return env


def dev_tree(*args: str) -> list[str]:
    """The command line that runs this checkout's meshbot (with PYTHONPATH=REPO in its env)."""
    return [sys.executable, "-m", "meshbot", *args]


class Command:
    """One run of a command; stdout and stderr lines are kept in order as they arrive."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, lines: list[str], pattern: str, timeout: float) -> re.Match[str]:
        """The first line of `lines` (self.stdout or self.stderr) matching `pattern`; fails after `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((m for m in map(regex.search, lines) if m), None)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)):
                    raise AssertionError(f"no line matching {pattern!r} after {timeout:.0f}s\n{self.transcript()}")
                self._changed.wait(min(left, 0.5))

    def finish(self, timeout: float) -> int:
        """Wait for the exit (killed after `timeout`); the exit code."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"still running after {timeout:.0f}s\n{self.transcript()}") from None
        for reader in self._readers:
            reader.join(10)
        return self.proc.returncode

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C, as a person at the terminal; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.finish(timeout)

    def transcript(self, last: int = 40) -> str:
        """The last lines of both streams, for a failure message."""
        with self._changed:
            out, err = self.stdout[-last:], self.stderr[-last:]
        return "--- stdout ---\n" + "\n".join(out) + "\n--- stderr ---\n" + "\n".join(err)

    def __enter__(self) -> Command:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
