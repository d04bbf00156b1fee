"""Two workers behind one bot, end to end: a real mosquitto, a real redis-server, real MQTT clients, and the
`openai` backend on one real `llama_cpp.server` serving the bundled model, all on 127.0.0.1.

A publisher plays two gateways that both hear the same 20 DMs from 5 handsets: each DM reaches the broker
twice, and the shared subscription can hand the two copies to different workers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_support import Workers, answers_by_question, assert_real_answer, body, complete
from tests.conftest import wait_until
from tests.mqtt_support import Broker, Handset
from tests.openai_servers import LlamaServer
from tests.redis_support import RedisServer

pytestmark = [pytest.mark.model, pytest.mark.slow]

GW1, GW2 = 0x6A7E0001, 0x6A7E0002
HANDSETS = [0x0A000001 + i for i in range(5)]
QUESTIONS = ["What is LoRa?", "Why is the sky blue?", "How do radios work?", "What is a mesh network?"]
MAX_BYTES, MAX_FRAGMENTS = 200, 3


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def workers(broker: Broker, redis_server: RedisServer, tmp_path: Path, model_server: LlamaServer) -> Iterator[Workers]:
    made = Workers(broker.port, redis_server, tmp_path, model_url=model_server.url)
    yield made
    made.stop_all()


@pytest.fixture
def handsets(broker: Broker) -> Iterator[list[Handset]]:
    made = [Handset(broker.port, num, gateways=(GW1, GW2)) for num in HANDSETS]
    yield made
    for h in made:
        h.close()


def test_two_workers_answer_20_dms_heard_by_two_gateways_each_exactly_once(
    workers: Workers, handsets: list[Handset]
) -> None:
    limits = {"mesh.max_fragment_bytes": MAX_BYTES, "mesh.max_fragments": MAX_FRAGMENTS}
    a, b = workers.start("a", **limits), workers.start("b", **limits)
    assert a.node.node_num == b.node.node_num  # one bot identity
    for h in handsets:
        wait_until(lambda h=h: h.bot_key is not None, timeout=10)
        h.announce()  # its NodeInfo reaches one worker; the other learns the key through Redis
    started = time.monotonic()
    asked = [(h.num, h.dm(question)) for question in QUESTIONS for h in handsets]  # each via GW1 and GW2
    by_handset = {h.num: h for h in handsets}

    def all_answered() -> bool:
        return all(complete(answers_by_question(by_handset[n]).get(pid, []), MAX_FRAGMENTS) for n, pid in asked)

    wait_until(all_answered, timeout=180)
    took = time.monotonic() - started
    for num, pid in asked:
        assert_real_answer(answers_by_question(by_handset[num])[pid], MAX_BYTES, MAX_FRAGMENTS)
    for h in handsets:
        assert set(answers_by_question(h)) == {pid for n, pid in asked if n == h.num}  # one answer per DM, no other
        assert not h.dropped  # every fragment opened with the bot's key: valid PKI

    def answered_by_worker() -> dict[str, int]:
        return {w: d.store.status()["last_day"]["answered"] for w, d in workers.running.items()}

    # The handsets have every fragment; a worker closes its row once the last fragment's ACK is back.
    wait_until(lambda: sum(answered_by_worker().values()) == len(asked), timeout=60)
    answered = answered_by_worker()
    print(f"\n{len(asked)} real answers in {took:.1f}s, {took / len(asked):.2f}s per answer; by worker: {answered}")
    print("e.g.", body(answers_by_question(by_handset[asked[0][0]])[asked[0][1]]))
    assert all(n > 0 for n in answered.values()), answered  # both workers took a share
