"""Model servers for the openai backend's tests: the real `llama_cpp.server`, and a tiny one that stalls.

`LlamaServer` runs llama-cpp-python's own OpenAI-compatible server on the bundled GGUF as a child process on
127.0.0.1; a server that cannot start fails the test with its stderr. `StallingServer` is a stdlib HTTP server
in a thread that streams a few chat completion chunks and then goes silent, as a hung or overloaded server does.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """llama_cpp.server (via `meshbot serve-model`) on the bundled model; start, kill and start again on the same port."""

    def __init__(self, log_dir: Path) -> None:
        from meshbot.models.llama import bundled_model_path  # the test process may import llama.cpp

        self.model_path = bundled_model_path()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_dir / "llama_server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it lists its model; pytest.fail with its log if it cannot."""
        # llama-cpp-python's own server, through `meshbot serve-model` (which loads the model as the llama
        # backend does: on an AMX Xeon the plain `python -m llama_cpp.server` dies at its first request).
        cmd = [sys.executable, "-m", "meshbot", "serve-model", "--model", str(self.model_path), "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--n_ctx", "2048", "--n_threads", "2"]
        # By default a request that arrives while another streams ends that one with [DONE] and no
        # finish_reason, which reads as a short but whole answer: several workers' requests must queue instead.
        cmd += ["--interrupt_requests", "false"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {self.proc.returncode}:\n{self._log_tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        self.kill()
        pytest.fail(f"llama_cpp.server did not answer /v1/models within {START_TIMEOUT_S:.0f}s:\n{self._log_tail()}")

    def ready(self) -> bool:
        """True when the server lists a model."""
        try:
            return httpx.get(f"{self.url}/models", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug: no goodbye to open connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def _log_tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


def _chunk(content: str) -> bytes:
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]}
    return f"data: {json.dumps(body)}\n\n".encode()


class StallingServer:
    """Streams `pieces` as chat completion chunks, then sends nothing more until stopped."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.release = threading.Event()
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:
                body = json.dumps({"object": "list", "data": [{"id": "stall-model", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in server.pieces:
                    data = _chunk(piece)
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                server.release.wait(30)  # silent, connection open: the stall

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="stalling-server", daemon=True)

    def __enter__(self) -> StallingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
