"""The console's one small HTTP server: `/metrics`, `/api/console.json`, the page at `/` and its static files.

Read-only (GET and HEAD only), threaded, bound when built so a busy port is a clear start-up error. With a
token, every route but the static files (a plotting library and a style sheet) asks for it: as
`Authorization: Bearer <token>` (Prometheus' `authorization` setting) or `?token=` (a browser's first visit).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

STATIC = {
    "uPlot.iife.min.js": "application/javascript",
    "uPlot.min.css": "text/css",
    "console.js": "application/javascript",
    "console.css": "text/css",
    "LICENSE.uPlot": "text/plain",
}


def static_file(name: str) -> bytes:
    """A file shipped in meshbot/console/static."""
    return resources.files("meshbot.console").joinpath("static", name).read_bytes()


class ConsoleServer:
    """Serves the console on (host, port) from a thread of its own once `start()` is called."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str | None,
        metrics: Callable[[], bytes],
        feed: Callable[[], dict[str, Any]],
    ) -> None:
        handler = _handler(token, metrics, feed, {n: static_file(n) for n in (*STATIC, "index.html")})
        self._httpd = ThreadingHTTPServer((host, port), handler)  # OSError: the port is taken
        self._httpd.daemon_threads = True  # a slow client never holds up the daemon's stop
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when the config said 0)."""
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="meshbot-console", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port (within a poll interval)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(2.0)
            self._thread = None
        self._httpd.server_close()


def _handler(
    token: str | None,
    metrics: Callable[[], bytes],
    feed: Callable[[], dict[str, Any]],
    files: dict[str, bytes],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "meshbot-console"

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _serve(self, body: bool) -> None:
            url = urlsplit(self.path)
            path = url.path
            if path.startswith("/static/") and path[8:] in STATIC:
                return self._send(200, STATIC[path[8:]], files[path[8:]], body, cache=True)
            if path not in ("/", "/index.html", "/metrics", "/api/console.json"):
                return self._send(404, "text/plain", b"not found\n", body)
            if not self._allowed(url.query):
                return self._send(401, "text/plain", b"a bearer token is required\n", body, challenge=True)
            try:
                if path == "/metrics":
                    return self._send(200, CONTENT_TYPE_LATEST, metrics(), body)
                if path == "/api/console.json":
                    return self._send(200, "application/json", json.dumps(feed()).encode(), body)
            except Exception:  # the console must never take the daemon down; the operator sees one line
                log.exception("console: serving %s failed", path)
                return self._send(500, "text/plain", b"internal error\n", body)
            return self._send(200, "text/html; charset=utf-8", files["index.html"], body)

        def _allowed(self, query: str) -> bool:
            if token is None:
                return True
            given = self.headers.get("Authorization", "")
            offered = given[7:] if given.startswith("Bearer ") else (parse_qs(query).get("token") or [""])[0]
            return hmac.compare_digest(offered.encode(), token.encode())

        def _send(
            self, code: int, ctype: str, data: bytes, body: bool, cache: bool = False, challenge: bool = False
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if challenge:
                self.send_header("WWW-Authenticate", 'Bearer realm="meshbot"')
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_POST(self) -> None:
            self._send(405, "text/plain", b"read-only\n", True)

        do_PUT = do_DELETE = do_PATCH = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("console: " + format, *args)

    return Handler
