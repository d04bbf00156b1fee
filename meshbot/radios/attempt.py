"""A blocking connect that its caller can give up on.

The meshtastic library's interfaces connect inside calls that block: a TCP connect to a silent host
(the OS's SYN retries), a config download that never completes (up to `connect_timeout_s`), a serial
open. A stop must not wait for them. So each attempt runs on its own daemon thread; the supervisor
waits on it and on its own stop flag, and when the stop wins it walks away. Whatever the attempt
built is closed: at once if it already exists (a half-built interface: this shuts its socket), and
otherwise when the blocked call returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often a waiting supervisor looks at its stop flag
CLOSE_WAIT_S = 2.0  # a close that takes longer is left to finish on its own thread


def close_quietly(thing: Any, wait_s: float = CLOSE_WAIT_S) -> None:
    """Close `thing` on a helper thread, waiting at most `wait_s`; errors are logged, never raised."""

    def run() -> None:
        try:
            thing.close()
        except Exception as exc:  # a half-dead link may fail to close; it is gone either way
            log.debug("closing %r: %s", thing, exc)

    closer = threading.Thread(target=run, name="meshbot-radio-close", daemon=True)
    closer.start()
    closer.join(wait_s)
    if closer.is_alive():
        log.warning("closing %r takes over %.0fs: left to finish in the background", thing, wait_s)


class ConnectAttempt:
    """Runs `build(made)` on its own thread; `build` calls `made(obj)` as soon as the object exists."""

    def __init__(self, build: Callable[[Callable[[Any], None]], Any], name: str = "meshbot-radio-connect") -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._obj: Any = None  # the half-built object, then the built one
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, args=(build,), name=name, daemon=True)
        self._thread.start()

    def _made(self, obj: Any) -> None:
        with self._lock:
            self._obj = obj
            abandoned = self._abandoned
        if abandoned:  # given up on before the object existed
            close_quietly(obj)

    def _run(self, build: Callable[[Callable[[Any], None]], Any]) -> None:
        try:
            result = build(self._made)
        except BaseException as exc:  # handed to the waiting supervisor
            with self._lock:
                self._error = exc
        else:
            with self._lock:
                known, self._obj = self._obj, result
                abandoned = self._abandoned
            if abandoned and result is not known:  # `known` was closed by abandon()
                close_quietly(result)
        finally:
            self._done.set()

    def wait(self, cancel: threading.Event) -> Any:
        """The built object; re-raises the attempt's error; None (attempt abandoned) once `cancel` is set."""
        while not self._done.wait(POLL_S):
            if cancel.is_set():
                self._abandon()
                return None
        if self._error is not None:
            raise self._error
        return self._obj

    def _abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            obj = self._obj
        if obj is not None:
            close_quietly(obj)  # a half-built interface: shut its socket so the blocked call ends sooner
        log.debug("connect attempt abandoned (%s)", "closed what it had built" if obj is not None else "nothing built")
