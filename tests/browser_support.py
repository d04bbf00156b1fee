"""A real headless Chromium (Debian's `chromium`), driven over the DevTools protocol, for the console page tests."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websocket

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1280,1900",
)
START_S = 30.0


class Chromium:
    """One browser with one page; records console errors, exceptions and failed loads as they happen."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.fail("no chromium: install Debian's chromium package (`make system-deps`); this test never skips")
        profile = workdir / "chromium-profile"  # fresh: no extensions, no cache, no first-run
        self._log = (workdir / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"], stdout=self._log, stderr=self._log
        )
        self.events: list[dict[str, Any]] = []
        self._next = 0
        try:
            self.ws = websocket.create_connection(self._page_socket(profile, workdir), timeout=30, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def _page_socket(self, profile: Path, workdir: Path) -> str:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_S
        while not active.exists() or not active.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "chromium.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"chromium did not start (exit {self.proc.poll()}); its output:\n{log}")
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are kept."""
        self._next += 1
        self.ws.send(json.dumps({"id": self._next, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._next:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> Any:
        """Poll until `expression` is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.25)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
                out.append(json.dumps(params.get("args", []))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                out.append(json.dumps(params["entry"])[:500])
        return out

    def screenshot(self, path: Path) -> Path:
        """Write a PNG of the whole page."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """End the browser."""
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
