"""One daemon per store: an OS file lock beside the database, held for the daemon's life.

Two daemons on one store answer each question twice, and on MQTT share one client id and kick each other off
the broker. `fcntl.flock` is released by the OS when the process ends however it ends, so a crashed daemon's
lock never outlives it (a PID file alone would). Several workers of one bot each have their own store and
share through `[cluster]`.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StoreLocked(Exception):
    """Another process holds the store; the message names its PID."""


def lock_path(store_path: str) -> Path:
    """The lock file of a store: `<store>.lock` beside it."""
    return Path(store_path).expanduser().with_name(Path(store_path).name + ".lock")


class StoreLock:
    """The exclusive lock on one store; `acquire` raises StoreLocked naming the holder."""

    def __init__(self, store_path: str) -> None:
        self.store_path = store_path
        self.path = lock_path(store_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting; StoreLocked when another process has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"store {self.store_path} is in use by another meshbot (PID {holder}): "
                f"stop it first, or give this one its own [store] path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Let go (the OS does too when the process ends); safe twice."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
