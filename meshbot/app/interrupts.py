"""SIGINT and SIGTERM for the long-running commands (`meshbot run`, `meshbot sim`).

The first signal asks for a graceful stop: the caller's `stop` event is set and the command winds down
(the reply in progress gets a short grace). A second one exits at once, with one log line and no
traceback: the store already holds every accepted question, so nothing is lost that a restart won't resume.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from meshbot.core.events import Event

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install(stop: threading.Event) -> bool:
    """Route SIGINT and SIGTERM to `stop`; False (nothing done) off the main thread, where Python forbids it."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, frame: request_stop(stop, signum))
    return True


def request_stop(stop: threading.Event, signum: int) -> None:
    """The signal handler: the first signal sets `stop`; a second exits now with 128 + signal (130 for Ctrl-C)."""
    name = signal.Signals(signum).name
    if stop.is_set():
        exit_now(name, 128 + signum)
    log.info("got %s: stopping (send it again to exit at once)", name, extra={"event": Event.SIGNAL})
    stop.set()


def exit_now(name: str, code: int) -> None:
    """Log one line, flush the logs and end the process without unwinding (no traceback, no waiting)."""
    log.warning(
        "got %s again: exiting now; unfinished questions stay stored for the next start",
        name,
        extra={"event": Event.INTERRUPTED},
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(code)  # a SystemExit would run the graceful path's `finally` blocks, which may wait
