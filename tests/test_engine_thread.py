"""The engine thread: every job on one thread, results and errors back on the caller's."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from meshbot.models.engine_thread import EngineThread


@pytest.fixture
def engine() -> Iterator[EngineThread]:
    thread = EngineThread("test-engine")
    yield thread
    thread.close()


def test_calls_from_any_thread_run_on_the_one_engine_thread(engine: EngineThread) -> None:
    seen: list[str] = []
    record = lambda: seen.append(threading.current_thread().name)
    callers = [threading.Thread(target=lambda: engine.call(record)) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=5)
    engine.call(record)
    assert seen == ["test-engine"] * 5


def test_a_call_returns_its_result_and_raises_its_error_on_the_caller(engine: EngineThread) -> None:
    assert engine.call(lambda: 6 * 7) == 42
    with pytest.raises(ZeroDivisionError):
        engine.call(lambda: 1 / 0)
    assert engine.call(lambda: "still serving") == "still serving"


def test_iterate_yields_items_made_on_the_engine_thread(engine: EngineThread) -> None:
    def produce() -> Iterator[tuple[int, str]]:
        for i in range(3):
            yield i, threading.current_thread().name

    assert list(engine.iterate(produce)) == [(0, "test-engine"), (1, "test-engine"), (2, "test-engine")]


def test_closing_early_stops_the_producer_and_waits_for_its_clean_up(engine: EngineThread) -> None:
    made: list[int] = []
    cleaned = threading.Event()

    def produce() -> Iterator[int]:
        try:
            for i in range(1_000_000):
                made.append(i)
                yield i
        finally:
            cleaned.set()

    items = engine.iterate(produce)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert cleaned.is_set()  # done before close() returned, not some time later
    stopped_at = len(made)
    assert stopped_at < 1_000_000
    assert engine.call(lambda: "free again") == "free again"
    assert len(made) == stopped_at  # nothing made after the close


def test_an_error_mid_stream_reaches_the_consumer_after_the_items_before_it(engine: EngineThread) -> None:
    def produce() -> Iterator[str]:
        yield "first"
        raise RuntimeError("engine fell over")

    items = engine.iterate(produce)
    assert next(items) == "first"
    with pytest.raises(RuntimeError, match="fell over"):
        next(items)
