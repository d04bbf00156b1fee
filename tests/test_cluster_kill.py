"""SIGKILL one of two workers (real `meshbot run` processes, the `openai` backend on one real `llama_cpp.server`
serving the bundled model) while it holds questions: every question is still answered, once, and what the dead
worker had sent is not sent again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from meshbot.cluster.shared import Shared
from meshbot.cluster.worklog import WorkLog
from meshbot.core.config import ClusterConfig
from meshbot.core.fragmenter import CUT_OFF
from tests.cluster_support import ANSWER_TOKENS, answers_by_question, assert_real_answer, complete
from tests.conftest import wait_until
from tests.daemon_proc import DaemonProcess
from tests.mqtt_support import ROOT, Broker, Handset
from tests.openai_servers import LlamaServer
from tests.redis_support import RedisServer

pytestmark = [pytest.mark.model, pytest.mark.slow]

GW1, GW2 = 0x6A7E0001, 0x6A7E0002
HANDSETS = [0x0B000001 + i for i in range(4)]
MAX_FRAGMENTS = 4
MAX_BYTES = 80  # short fragments: a 64-token answer takes several, so a kill can fall in the middle of one
LEASE_S = 3.0
QUESTIONS = ["What is LoRa?", "Why is the sky blue?", "How do radios work?", "What is a mesh network?"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def sections(broker: Broker, redis: RedisServer, model_url: str, worker: str) -> dict[str, dict[str, Any]]:
    """One worker process's config file: the same keys as cluster_support.worker_config's openai settings."""
    return {
        "radio": {"transport": "mqtt"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "root": ROOT, "channel": "LongFast", "key_wait_s": 2.0},
        "model": {"backend": "openai", "base_url": model_url, "max_tokens_cap": ANSWER_TOKENS},
        "answers": {"mode": "open", "reference": False},
        "mesh": {
            "min_gap_s": 2.0,
            "ack_timeout_s": 10.0,
            "max_fragment_bytes": MAX_BYTES,
            "max_fragments": MAX_FRAGMENTS,
        },
        "limits": {"per_node_burst": 10, "global_burst": 40},
        "queue": {"max_per_node": 10},
        "cluster": {"redis_url": redis.url, "worker_id": worker, "lease_s": LEASE_S, "heartbeat_s": 1.0},
    }


def held_by(redis: RedisServer, worker: str) -> int:
    work = WorkLog(Shared(ClusterConfig(redis_url=redis.url, worker_id="probe")), 3.0)
    return work.pending_by_worker().get(worker, 0)


def sent_fragments(proc: DaemonProcess) -> int:
    return sum(e.get("event") == "fragment-sent" for e in proc.events())


def test_sigkill_of_a_worker_holding_questions_loses_none_and_repeats_none(
    broker: Broker, redis_server: RedisServer, model_server: LlamaServer, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = DaemonProcess(tmp_path / "a", "127.0.0.1", sections(broker, redis_server, model_server.url, "a"))
    b = DaemonProcess(tmp_path / "b", "127.0.0.1", sections(broker, redis_server, model_server.url, "b"))
    handsets = [Handset(broker.port, num, gateways=(GW1, GW2)) for num in HANDSETS]
    with a, b:
        try:
            a.start()
            b.start()
            for h in handsets:
                wait_until(lambda h=h: h.bot_key is not None, timeout=20)
                h.announce()
            asked = [(h, h.dm(q)) for q in QUESTIONS[:2] for h in handsets]  # 8 DMs, each via two gateways
            # Kill a in the middle of its work: it has put a fragment on the broker and still holds questions.
            wait_until(lambda: sent_fragments(a) >= 1 and held_by(redis_server, "a") >= 2, timeout=120)
            killed_at = datetime.now(UTC)
            a.kill()
            wait_until(
                lambda: all(complete(answers_by_question(h).get(pid, []), MAX_FRAGMENTS) for h, pid in asked),
                timeout=240,
            )
            after = (datetime.now(UTC) - killed_at).total_seconds()
            for h, pid in asked:  # every index once: nothing lost, nothing sent twice
                assert_real_answer(answers_by_question(h)[pid], MAX_BYTES, MAX_FRAGMENTS)
            for h in handsets:
                assert set(answers_by_question(h)) == {pid for hh, pid in asked if hh is h}
                assert not h.dropped
            taken = [e for e in b.events() if e.get("event") == "taken-over"]
            assert taken, b.tail()  # b finished what a held
            first = datetime.fromisoformat(taken[0]["ts"].replace("Z", "+00:00"))
            assert (first - killed_at).total_seconds() < LEASE_S + 3  # within the lease and one takeover round
            assert held_by(redis_server, "a") == 0
            cut = sum(CUT_OFF in f for h, pid in asked for f in answers_by_question(h)[pid])
            print(f"\n{len(asked)} answered {after:.1f}s after the kill; b took over {len(taken)}, {cut} ended cut off")
        finally:
            for h in handsets:
                h.close()
