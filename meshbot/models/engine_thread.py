"""One long-lived thread that makes every call into a native engine. Pure threading, no I/O.

Why a thread of its own: llama.cpp's OpenMP build keeps a team of worker threads per
*calling* thread, and while two teams are alive libgomp sees more threads than cores and
stops spin-waiting at its barriers. On the 2-core reference box that cut generation from
84 to 51-61 tokens/s (README, "Measured figures"). Routing every call through one thread keeps one
team for the life of the process, whichever thread asks: the worker, the `ask` command,
a benchmark's baseline.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"


class EngineThread:
    """Runs submitted work, one job at a time, on a single daemon thread."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def _on_engine(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the engine thread and return its result; its exception is raised here."""
        if self._on_engine():
            return fn()
        done: Future[T] = Future()

        def job() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the caller, who decides
                done.set_exception(exc)

        self._jobs.put(job)
        return done.result()

    def iterate(self, produce: Callable[[], Iterator[T]]) -> Iterator[T]:
        """Items of `produce()`, made on the engine thread and yielded on the caller's.

        Closing the returned iterator stops `produce` after its current item and waits until
        its clean-up has run, so the engine is free and its end-of-run bookkeeping is done.
        """
        if self._on_engine():
            yield from produce()
            return
        cancel = threading.Event()
        out: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()

        def job() -> None:
            try:
                items = produce()
                try:
                    for item in items:
                        out.put((_ITEM, item))
                        if cancel.is_set():
                            break
                finally:
                    # A generator's own clean-up must run here, on this thread, before "end".
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:  # re-raised on the caller's thread
                out.put((_ERROR, exc))
                return
            out.put((_END, None))

        self._jobs.put(job)
        finished = False
        try:
            while True:
                kind, value = out.get()
                if kind == _ITEM:
                    yield value  # type: ignore[misc]
                    continue
                finished = True
                if kind == _ERROR:
                    raise value  # type: ignore[misc]
                return
        finally:
            if not finished:
                cancel.set()
                while out.get()[0] == _ITEM:  # drain until the job has returned
                    pass

    def close(self, last: Callable[[], None] | None = None, timeout_s: float | None = None) -> None:
        """Finish queued jobs and then `last`, end the thread; wait at most `timeout_s` for it."""
        if last is not None:
            self._jobs.put(last)
        self._jobs.put(None)
        if not self._on_engine():
            self._thread.join(timeout_s)
