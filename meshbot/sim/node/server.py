"""A TCP server for the stream protocol: one client at a time, one I/O thread, no busy loops.

It knows frames, not protobufs: complete frame payloads go to a `LinkHandler`. As the firmware's
WiFi API does, a new client silently replaces (kicks) the current one.
"""

from __future__ import annotations

import collections
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from meshbot.sim.rules.framing import FrameDecoder, encode_frame

logger = logging.getLogger(__name__)

RECV_CHUNK = 4096
# A client that leaves this many seconds of our writes unread is treated as gone.
SEND_TIMEOUT_S = 5.0
LISTEN_BACKLOG = 4


class ClientLink:
    """One accepted TCP connection. `send` is thread-safe; closing is the server's job."""

    def __init__(self, number: int, sock: socket.socket, peer: str) -> None:
        self.number = number  # 1 for the first client the server accepted, then 2, ...
        self.peer = peer
        self.decoder = FrameDecoder()
        self._sock = sock
        self._lock = threading.Lock()
        self._closed = False
        self.on_send_failure: Callable[[ClientLink], None] = lambda link: None

    @property
    def closed(self) -> bool:
        """True once the connection is closed."""
        return self._closed

    def send(self, payloads: Iterable[bytes]) -> bool:
        """Frame and write payloads in order; False if the link is closed or the write failed."""
        data = b"".join(encode_frame(p) for p in payloads)
        if not data:
            return True
        with self._lock:
            if self._closed:
                return False
            try:
                self._sock.sendall(data)
                return True
            except OSError as exc:
                logger.info("client #%d: write failed (%s)", self.number, exc)
        self.on_send_failure(self)
        return False

    def fileno(self) -> int:
        """The socket's descriptor (for the selector)."""
        return self._sock.fileno()

    def recv(self) -> bytes:
        """Read what is available; b"" at EOF. Raises OSError on a broken connection."""
        return self._sock.recv(RECV_CHUNK)

    def close(self, *, reset: bool = False) -> None:
        """Close the connection: FIN normally, RST when `reset`."""
        if not reset:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # also wakes a writer blocked in sendall
            except OSError:
                pass
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if reset:
                # SO_LINGER on with a zero timeout turns close() into a TCP reset.
                try:
                    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            self._sock.close()


class LinkHandler(Protocol):
    """What the server tells its owner; every call runs on the server's I/O thread."""

    def on_connect(self, link: ClientLink) -> None:
        """A client connected (any previous one is already closed)."""

    def on_frame(self, link: ClientLink, payload: bytes) -> None:
        """A complete frame arrived from `link`."""

    def on_disconnect(self, link: ClientLink) -> None:
        """`link` closed: EOF, error, kicked, dropped or server stop."""


class StreamServer:
    """Listens on host:port (port 0 picks a free one) and serves one client at a time."""

    def __init__(self, handler: LinkHandler, *, host: str = "127.0.0.1", port: int = 0, name: str = "sim") -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._name = name
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._commands: collections.deque[Callable[[], None]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._link: ClientLink | None = None
        self._accepted = 0
        self._stopping = False
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (kept after `stop`); 0 before `start`."""
        return self._port

    @property
    def link(self) -> ClientLink | None:
        """The connected client, if any."""
        link = self._link
        return None if link is None or link.closed else link

    def start(self) -> None:
        """Bind, listen and start the I/O thread; returns once connections are accepted."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._host, self._requested_port))
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._wake_r.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name=f"{self._name}-io", daemon=True)
        self._thread.start()
        logger.info("%s: listening on %s:%d", self._name, self._host, self.port)

    def stop(self) -> None:
        """Close the client and the listener, and join the I/O thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join()
        self._thread = None

    def drop_client(self, *, reset: bool = False, timeout: float = 5.0) -> bool:
        """Close the current client (FIN, or RST with `reset`); False if there was none."""
        if self._thread is None:
            return False
        if self._thread is threading.current_thread():  # called from a handler: no need to post
            link = self.link
            if link is not None:
                self._close_link(link, reset=reset, why="dropped")
            return link is not None
        done = threading.Event()
        result: list[bool] = []

        def command() -> None:
            link = self.link
            if link is not None:
                self._close_link(link, reset=reset, why="dropped")
            result.append(link is not None)
            done.set()

        self._post(command)
        done.wait(timeout)
        return bool(result and result[0])

    def close_link(self, link: ClientLink, *, why: str) -> None:
        """Close `link` with a FIN (from a handler, on the I/O thread): the firmware ending a connection itself."""
        self._close_link(link, reset=False, why=why)

    def _post(self, command: Callable[[], None]) -> None:
        self._commands.append(command)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # the buffer is full: the I/O thread is already due to wake

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select():
                    self._dispatch(key.data)
        finally:
            self._shutdown()

    def _dispatch(self, what: object) -> None:
        if what == "listen":
            self._accept()
        elif what == "wake":
            self._drain_wake()
        elif isinstance(what, ClientLink):
            self._read(what)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(RECV_CHUNK):
                pass
        except BlockingIOError:
            pass
        while self._commands:
            self._commands.popleft()()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, addr = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.settimeout(SEND_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        old = self.link
        if old is not None:
            self._close_link(old, reset=False, why="kicked by a new client")
        self._accepted += 1
        link = ClientLink(self._accepted, sock, f"{addr[0]}:{addr[1]}")
        link.on_send_failure = self._on_send_failure
        self._link = link
        self._selector.register(sock, selectors.EVENT_READ, link)
        logger.info("%s: client #%d connected from %s", self._name, link.number, link.peer)
        self._handler.on_connect(link)

    def _on_send_failure(self, link: ClientLink) -> None:
        # Any thread may fail a write; only the I/O thread touches the selector.
        self._post(lambda: self._close_link(link, reset=False, why="write failed"))

    def _read(self, link: ClientLink) -> None:
        try:
            data = link.recv()
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError as exc:
            self._close_link(link, reset=False, why=f"read failed: {exc}")
            return
        if not data:
            self._close_link(link, reset=False, why="client closed")
            return
        for payload in link.decoder.feed(data):
            try:
                self._handler.on_frame(link, payload)
            except Exception:  # bad client bytes must never take the node down
                logger.exception("%s: client #%d: frame handling failed", self._name, link.number)

    def _close_link(self, link: ClientLink, *, reset: bool, why: str) -> None:
        if link.closed:
            return
        try:
            self._selector.unregister(link)
        except (KeyError, ValueError):
            pass
        link.close(reset=reset)
        if self._link is link:
            self._link = None
        logger.info("%s: client #%d disconnected (%s)", self._name, link.number, why)
        self._handler.on_disconnect(link)

    def _shutdown(self) -> None:
        link = self.link
        if link is not None:
            self._close_link(link, reset=False, why="server stopping")
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                try:
                    self._selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
                sock.close()
        self._listener = None
        self._selector.close()
        while self._commands:  # let anyone waiting on a command return
            self._commands.popleft()()
