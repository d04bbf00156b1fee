"""Conversation memory shared by the workers of one bot, on a real redis-server."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon
from meshbot.cluster.memory import SharedMemory
from meshbot.cluster.shared import Shared
from meshbot.core.clock import VirtualClock
from meshbot.core.config import ClusterConfig, load_config
from meshbot.core.domain import Generation, Inbound
from meshbot.core.events import Event
from meshbot.service.daemon import Daemon
from meshbot.storage.memory import DM, Asked, Exchange, Snapshot
from meshbot.storage.store import Store
from tests.cluster_support import FakeRadioWorkers
from tests.conftest import wait_until
from tests.fakes import ALICE, BOB, BOT_NUM, FakeModel, FakeRadio
from tests.redis_support import RedisServer


def memory(server: RedisServer, worker: str = "a", **kw: float) -> SharedMemory:
    return SharedMemory(Shared(ClusterConfig(redis_url=server.url, worker_id=worker, group="g")), **kw)


def exchange(n: int) -> Exchange:
    return Exchange(f"question {n}", f"answer {n}", 10 + n, 1000.0 + n)


def remember(table: SharedMemory, node: int, channel: int | None, n: int, keep: int = 6, idle_s: float = 60) -> None:
    table.add(node, channel, Asked(n, node, n), exchange(n), keep, idle_s)


# -- the table -------------------------------------------------------------------------------------------


def test_a_conversation_keeps_its_newest_exchanges_oldest_first(redis_server: RedisServer) -> None:
    table = memory(redis_server)
    for n in range(1, 6):
        remember(table, ALICE, None, n, keep=3)
    assert table.recent(ALICE, None, 10) == [exchange(3), exchange(4), exchange(5)]
    assert table.recent(ALICE, None, 2) == [exchange(4), exchange(5)]
    assert table.recent(ALICE, None, 0) == []
    assert table.recent(ALICE, 0, 10) == [] and table.recent(BOB, None, 10) == []  # other conversations
    keys = {k.decode() for k in redis_server.client().keys("*")}
    assert keys and all(k.startswith("mb:g:mem") for k in keys)  # under the bot's prefix


def test_an_exchange_is_remembered_once_per_question_whichever_worker_answers(redis_server: RedisServer) -> None:
    a, b = memory(redis_server, "a"), memory(redis_server, "b")
    a.add(ALICE, None, Asked(1, ALICE, 7), exchange(1), 6, 60)
    b.add(ALICE, None, Asked(40, ALICE, 7), exchange(1), 6, 60)  # taken over: another local id, the same packet
    assert b.recent(ALICE, None, 10) == [exchange(1)]


def test_forget_drops_one_conversation_and_says_how_long_it_was(redis_server: RedisServer) -> None:
    a, b = memory(redis_server, "a"), memory(redis_server, "b")
    for n in (1, 2):
        remember(a, ALICE, None, n)
    remember(a, ALICE, 3, 3)
    assert b.forget(ALICE, None) == 2
    assert a.recent(ALICE, None, 10) == []
    assert a.recent(ALICE, 3, 10) == [exchange(3)]  # the channel thread is another conversation
    assert b.forget(ALICE, None) == 0


def test_an_idle_conversation_expires_as_a_whole_and_each_exchange_restarts_the_clock(
    redis_server: RedisServer,
) -> None:
    table = memory(redis_server)
    remember(table, ALICE, None, 1, idle_s=0.6)
    time.sleep(0.4)
    remember(table, ALICE, None, 2, idle_s=0.6)
    time.sleep(0.4)  # 0.8 s after the first exchange, 0.4 s after the last
    assert table.recent(ALICE, None, 10) == [exchange(1), exchange(2)]
    time.sleep(0.4)
    assert table.recent(ALICE, None, 10) == []


def test_a_snapshot_is_read_back_on_another_worker_until_the_question_is_answered(
    redis_server: RedisServer,
) -> None:
    a, b = memory(redis_server, "a", asked_keep_s=30), memory(redis_server, "b")
    history = [exchange(1), Exchange("ça va ?", "oui 🙂", 9, 1002.5)]
    a.save_snapshot(Asked(5, ALICE, 99), ALICE, None, history)
    b.save_snapshot(Asked(12, ALICE, 99), ALICE, None, [])  # the first snapshot wins
    taken_over = Asked(12, ALICE, 99)  # another worker's id for the same packet
    assert b.snapshot(taken_over) == Snapshot(ALICE, DM, tuple(history))
    assert 0 < redis_server.client().pttl(f"mb:g:mem-asked:{ALICE}:99") <= 30_000
    assert b.snapshot(Asked(5, ALICE, 98)) is None
    b.add(ALICE, None, taken_over, exchange(3), 6, 60)
    assert a.snapshot(Asked(5, ALICE, 99)) is None  # answered: no longer kept


def test_with_redis_away_memory_is_empty_one_warning_says_so_and_it_comes_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    table = memory(redis_server, retry_s=0.0)  # no rest between tries: every call meets the outage
    remember(table, ALICE, None, 1)
    redis_server.stop()
    caplog.set_level(logging.DEBUG, logger="meshbot")
    remember(table, ALICE, None, 2)
    table.save_snapshot(Asked(3, ALICE, 3), ALICE, None, [])
    assert table.recent(ALICE, None, 10) == [] and table.snapshot(Asked(3, ALICE, 3)) is None
    assert table.forget(ALICE, None) == 0
    events = [(r.levelno, getattr(r, "event", None)) for r in caplog.records]
    assert events.count((logging.WARNING, Event.MEMORY_UNAVAILABLE)) == 1
    redis_server.start()  # the same port, empty (no persistence in tests)
    remember(table, ALICE, None, 4)
    assert table.recent(ALICE, None, 10) == [exchange(4)]
    assert (logging.INFO, Event.MEMORY_BACK) in [(r.levelno, getattr(r, "event", None)) for r in caplog.records]


# -- two workers, one conversation ------------------------------------------------------------------------


Workers = FakeRadioWorkers


@pytest.fixture
def workers(redis_server: RedisServer) -> Iterator[Workers]:
    # A conversation is more questions in a row than the default allows.
    made = Workers(redis_server, **{"limits.per_node_burst": 20})
    yield made
    made.stop_all()


def dm(text: str, packet_id: int) -> Inbound:
    raw = text.encode("utf-8")
    return Inbound(
        ALICE, BOT_NUM, packet_id, "TEXT_MESSAGE_APP", text, len(raw), is_dm=True, hop_start=3, hop_limit=3, pki=True
    )


def ask(daemon: Daemon, radio: FakeRadio, model: FakeModel, text: str, packet_id: int) -> Generation:
    """Deliver one DM and return the prompt the model got for it, once it is answered."""
    before = len(model.requests)
    radio.receive(dm(text, packet_id))
    wait_until(lambda: len(model.requests) == before + 1 and daemon.idle(), timeout=10)
    return model.requests[-1]


def history(request: Generation) -> list[tuple[str, str]]:
    """The turns between the system prompt and the question."""
    return [(t.role, t.content) for t in request.turns[1:-1]]


def test_a_follow_up_on_another_worker_is_asked_with_the_conversation_and_reset_anywhere_forgets_it(
    workers: Workers,
) -> None:
    model_a, model_b = FakeModel().queue("Long range radio."), FakeModel().queue("About ten kilometres.")
    a, radio_a = workers("a", model_a)
    b, radio_b = workers("b", model_b)
    assert history(ask(a, radio_a, model_a, "what is lora?", 1)) == []
    follow_up = ask(b, radio_b, model_b, "how far does it reach?", 2)
    assert history(follow_up) == [("user", "what is lora?"), ("assistant", "Long range radio.")]
    radio_b.receive(dm("!reset", 3))
    wait_until(lambda: any(t.startswith("Forgotten") for t in radio_b.texts()), timeout=10)
    assert history(ask(a, radio_a, model_a, "and its power?", 4)) == []  # forgotten for worker a too


def test_with_redis_gone_mid_run_the_question_is_answered_without_history_and_one_warning_is_logged(
    redis_server: RedisServer, workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    model = FakeModel().queue("Long range radio.", "About ten kilometres.")
    a, radio = workers("a", model)
    ask(a, radio, model, "what is lora?", 1)
    a.paused.set()  # the follow-up is accepted (claim, rate limit) while Redis is up, and waits
    radio.receive(dm("how far does it reach?", 2))
    wait_until(lambda: len(a.ledger.held()) == 1, timeout=10)  # type: ignore[attr-defined]
    redis_server.stop()
    caplog.set_level(logging.DEBUG, logger="meshbot")
    a.paused.clear()
    wait_until(lambda: len(radio.texts()) == 2, timeout=15)
    assert radio.texts()[-1] == "About ten kilometres."
    assert history(model.requests[-1]) == []  # memory unreachable: the answer goes out without it
    warnings = [r for r in caplog.records if getattr(r, "event", None) == Event.MEMORY_UNAVAILABLE]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_a_question_that_arrives_while_redis_is_down_is_still_answered(
    redis_server: RedisServer, workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    # Claims, rate limits, the work log and memory all live in Redis: none of them may cost the asker an answer.
    model = FakeModel().queue("Long range radio.")
    a, radio = workers("a", model)
    redis_server.stop()
    caplog.set_level(logging.INFO, logger="meshbot")
    radio.receive(dm("what is lora?", 1))
    wait_until(lambda: len(radio.texts()) == 1, timeout=15)
    assert radio.texts() == ["Long range radio."]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and "intake failed" in r.getMessage()]
