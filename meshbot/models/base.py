"""What every model backend shares: the defaults behind `core.domain.Model` that most backends keep."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

from meshbot.core.domain import Generation, GenerationStats

T = TypeVar("T")


def pip_install(requirement: str) -> str:
    """The pip command that installs `requirement` into the Python running meshbot, spelled to work as printed."""
    # A bare `pip` may be another Python's, or not on the PATH at all (make puts the venv's nowhere).
    return f"{shlex.quote(sys.executable)} -m pip install {requirement}"


class ModelError(RuntimeError):
    """The model cannot be used (file, engine or server); the message says how to fix it."""


class ModelUnavailable(ModelError):
    """No answer came (server down, refused, timed out, HTTP error) before any text; the message says what to fix.

    `retryable` is False when waiting will not help (a wrong key or model name): the operator must act.
    """

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class ModelStalled(ModelError):
    """The stream stopped in the middle of an answer (silence past the chunk timeout, or the link dropped)."""


class BaseModel:
    """Defaults: answers are not reproducible, and work runs on the caller's thread."""

    name: str = "model"
    # True only when the same request and seed always give the same text: then a question cut short
    # by a crash may be regenerated and its delivered fragments skipped. Otherwise resume replays
    # what was stored and never splices two different generations.
    deterministic: bool = False

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        """Yield text pieces as they are generated, filling `stats` as it goes."""
        raise NotImplementedError

    def run(self, job: Callable[[], T]) -> T:
        """Run `job` (which streams from this model) where the backend computes best: here, by default."""
        return job()

    def close(self) -> None:
        """Release what the backend holds (threads, connections)."""
