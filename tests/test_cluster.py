"""Several workers, one bot: claims, leases, takeover and hand-back against a real redis-server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon
from meshbot.cluster.keys import SharedKeys
from meshbot.cluster.shared import Shared
from meshbot.cluster.worklog import WorkLog
from meshbot.core.clock import VirtualClock
from meshbot.core.config import ClusterConfig, load_config
from meshbot.core.domain import Inbound
from meshbot.core.fragmenter import CUT_OFF
from meshbot.radios.mqtt.identity import Keyring, resolve_identity
from meshbot.service.daemon import Daemon
from meshbot.storage.store import Store
from tests.cluster_support import FakeRadioWorkers
from tests.conftest import wait_until
from tests.fakes import ALICE, BOB, BOT_NUM, FakeModel, FakeRadio
from tests.redis_support import RedisServer


def shared(server: RedisServer, worker: str, lease_s: float = 1.0) -> Shared:
    return Shared(ClusterConfig(redis_url=server.url, worker_id=worker, lease_s=lease_s))


def worklog(server: RedisServer, worker: str, lease_s: float = 1.0) -> WorkLog:
    work = WorkLog(shared(server, worker, lease_s), lease_s)
    work.ensure_group()
    return work


def test_each_packet_is_claimed_by_exactly_one_of_four_racing_workers(redis_server: RedisServer) -> None:
    workers = [shared(redis_server, f"w{i}") for i in range(4)]
    won: dict[str, list[int]] = {w.worker_id: [] for w in workers}
    start = threading.Barrier(4)

    def race(w: Shared) -> None:
        start.wait()
        won[w.worker_id] = [pid for pid in range(1, 201) if w.claim(ALICE, pid)]

    threads = [threading.Thread(target=race, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = sorted(pid for pids in won.values() for pid in pids)
    assert claimed == list(range(1, 201))  # every packet once, none twice, none lost
    assert not workers[0].claim(ALICE, 7) and workers[0].claim(BOB, 7)  # the key is (sender, packet id)


def test_a_silent_workers_question_is_taken_after_the_lease_and_the_old_owner_is_fenced(
    redis_server: RedisServer,
) -> None:
    a, b = worklog(redis_server, "a"), worklog(redis_server, "b")
    held = a.enqueue(a.qkey(ALICE, 1), {"question": "why?"})
    assert b.take_dead(8) == []  # a is not silent yet
    time.sleep(1.2)
    assert b.take_dead(8) == [held.entry]
    assert b.take_dead(8) == []  # taken once
    assert a.renew([held]) == {held.entry}  # a learns it lost the question


def test_a_renewed_question_is_never_taken(redis_server: RedisServer) -> None:
    a, b = worklog(redis_server, "a"), worklog(redis_server, "b")
    held = a.enqueue(a.qkey(ALICE, 1), {"question": "why?"})
    for _ in range(10):
        time.sleep(0.3)
        assert a.renew([held]) == set()
        assert b.take_dead(8) == []


def test_a_handed_back_question_is_taken_at_once_and_only_once(redis_server: RedisServer) -> None:
    a, b, c = worklog(redis_server, "a"), worklog(redis_server, "b"), worklog(redis_server, "c")
    held = a.enqueue(a.qkey(ALICE, 1), {"question": "why?"})
    a.hand_back([held])
    a.hand_back([held])  # handed back twice (a retry): still one taker
    assert b.take_returned(8) == [held.entry]
    assert c.take_returned(8) == []
    record = b.load(held.entry)
    assert record is not None and record.fields["question"] == "why?"


def test_keys_and_identity_are_the_same_on_every_worker(redis_server: RedisServer) -> None:
    cfg = load_config(environ={}).mqtt
    one, two = SharedKeys(shared(redis_server, "a")), SharedKeys(shared(redis_server, "b"))
    first = resolve_identity(cfg, one, time.time)
    assert resolve_identity(cfg, two, time.time) == first  # a second worker speaks as the same node
    early = Keyring(one, 100, 3600.0, time.monotonic, time.time)
    late = Keyring(two, 100, 3600.0, time.monotonic, time.time)
    key = bytes(range(32))
    early.learn(ALICE, key)
    assert late.get(ALICE) == key  # learnt by one worker, known to the other
    assert Keyring(two, 100, 3600.0, time.monotonic, time.time).get(ALICE) == key  # and to one started later


# -- whole daemons (fake radio and model) sharing one Redis -----------------------------------------------


class Unrepeatable(FakeModel):
    """A model that cannot write the same text twice (a sampling server): a takeover must not call it."""

    deterministic = False


Workers = FakeRadioWorkers


@pytest.fixture
def workers(redis_server: RedisServer) -> Iterator[Workers]:
    made = Workers(redis_server, **{"mesh.min_gap_s": 2.0})
    yield made
    made.stop_all()


def dm(text: str, packet_id: int, sender: int = ALICE) -> Inbound:
    raw = text.encode("utf-8")
    return Inbound(
        sender, BOT_NUM, packet_id, "TEXT_MESSAGE_APP", text, len(raw), is_dm=True, hop_start=3, hop_limit=3, pki=True
    )


def ghost_question(server: RedisServer, fragments: list[str], published: int) -> None:
    """What a worker SIGKILLed mid-answer leaves: the question, its fragments, the first `published` sent."""
    work = worklog(server, "ghost")
    held = work.enqueue(
        work.qkey(ALICE, 77),
        {
            "sender": str(ALICE),
            "packet_id": "77",
            "question": "what is lora?",
            "kind": "ask",
            "reply_to": str(ALICE),
            "reply_channel": "0",
            "want_ack": "1",
            "is_dm": "1",
            "seed": "5",
            "accepted_at": repr(time.time()),
        },
    )
    for index, text in enumerate(fragments, start=1):
        work.fragment(held, index, text)
        if index <= published:
            work.published(held, index)


def open_entries(server: RedisServer) -> int:
    return sum(worklog(server, "probe").pending_by_worker().values())


def test_takeover_sends_only_unsent_fragments_and_ends_cut_off_without_asking_the_model(
    redis_server: RedisServer, workers: Workers
) -> None:
    ghost_question(redis_server, ["1/+ LoRa is a radio", "2/+ modulation that trades", "3/+ speed for reach"], 1)
    model = Unrepeatable()
    _, radio = workers("b", model)
    wait_until(lambda: any(CUT_OFF in t for t in radio.texts()), timeout=15)
    texts = radio.texts()
    assert not any(t.startswith("1/") for t in texts)  # went out before the crash: never again
    assert texts[0] == "2/+ modulation that trades"
    assert texts[-1].startswith("3/3 speed for reach") and texts[-1].endswith(CUT_OFF)
    assert model.requests == []  # a new generation would not match what was already sent
    wait_until(lambda: open_entries(redis_server) == 0, timeout=10)  # closed: nobody takes it again


def test_takeover_with_a_repeatable_model_writes_again_and_skips_what_was_sent(
    redis_server: RedisServer, workers: Workers
) -> None:
    answer = "LoRa is a long range radio. " * 12
    ghost_question(redis_server, ["1/+ LoRa is a long range radio."], 1)
    model = FakeModel().queue(answer.strip())
    _, radio = workers("b", model, **{"mesh.max_fragment_bytes": 120})
    wait_until(
        lambda: len(radio.texts()) >= 2
        and radio.texts()[-1].split(" ")[0].endswith("/" + radio.texts()[-1].split("/")[0]),
        timeout=20,
    )
    assert len(model.requests) == 1 and model.requests[0].seed == 5  # the same seed: the same text
    assert not any(t.startswith("1/") for t in radio.texts())
    assert radio.texts()[0].startswith("2/")


def test_a_question_heard_by_two_workers_is_answered_once(redis_server: RedisServer, workers: Workers) -> None:
    a, radio_a = workers("a", FakeModel().queue("Only once."))
    b, radio_b = workers("b", FakeModel().queue("Only once."))
    radio_a.receive(dm("what?", 9))  # two gateways' copies of one packet, at two workers
    radio_b.receive(dm("what?", 9))
    wait_until(lambda: len(radio_a.texts()) + len(radio_b.texts()) >= 1)
    time.sleep(0.5)
    assert radio_a.texts() + radio_b.texts() == ["Only once."]


def test_graceful_stop_hands_queued_questions_to_another_worker(redis_server: RedisServer, workers: Workers) -> None:
    a, radio_a = workers("a", FakeModel())
    a.paused.set()  # questions are accepted and stay queued
    for pid, sender in ((1, ALICE), (2, BOB), (3, ALICE + 1)):
        radio_a.receive(dm(f"question {pid}", pid, sender))
    wait_until(lambda: len(a.ledger.held()) == 3)  # type: ignore[attr-defined]  # accepted, none answered
    b, radio_b = workers("b", FakeModel().queue("one", "two", "three"))
    workers.stop(a)  # SIGTERM: hand back, do not answer
    wait_until(lambda: len(radio_b.texts()) == 3, timeout=15)
    assert sorted(radio_b.texts()) == ["one", "three", "two"]
    assert radio_a.texts() == []
    assert {s.message.dest for s in radio_b.sent} == {ALICE, BOB, ALICE + 1}
    wait_until(lambda: open_entries(redis_server) == 0, timeout=10)


class Gated(FakeModel):
    """Holds every answer until `release` is set: a worker busy with a long generation."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def stream(self, request, stats):  # type: ignore[no-untyped-def]
        self.release.wait(20)
        yield from super().stream(request, stats)


def test_a_busy_worker_gives_its_queued_questions_to_an_idle_one(redis_server: RedisServer, workers: Workers) -> None:
    # Every DM comes in several copies and the first copy's worker claims it: one worker can win them all.
    busy = Gated().queue("one")
    a, radio_a = workers("a", busy)
    b, radio_b = workers("b", FakeModel().queue("two", "three"))
    for pid, sender in ((1, ALICE), (2, BOB), (3, ALICE + 1)):
        radio_a.receive(dm(f"question {pid}", pid, sender))  # all won by a, which is stuck on the first
    wait_until(lambda: len(radio_b.texts()) == 2, timeout=15)
    assert sorted(radio_b.texts()) == ["three", "two"]  # the idle worker answered the two that waited
    busy.release.set()
    wait_until(lambda: radio_a.texts() == ["one"], timeout=10)
    assert len(busy.requests) == 1  # given away, never answered twice
    wait_until(lambda: open_entries(redis_server) == 0, timeout=10)


def test_more_is_answered_by_whichever_worker_gets_it(redis_server: RedisServer, workers: Workers) -> None:
    long_answer = " ".join(f"word{i}" for i in range(80))
    a, radio_a = workers("a", FakeModel().queue(long_answer), **{"mesh.max_fragments": 1})
    b, radio_b = workers("b", FakeModel(), **{"mesh.max_fragments": 1})
    radio_a.receive(dm("tell me everything", 1))
    wait_until(lambda: len(radio_a.texts()) == 1 and a.idle(), timeout=10)
    radio_b.receive(dm("more", 2))  # the next DM went to the other worker
    wait_until(lambda: len(radio_b.texts()) == 1, timeout=10)
    assert radio_b.texts()[0].startswith("2/")
    shown = radio_a.texts()[0] + " " + radio_b.texts()[0]
    assert "word0" in shown and "word30" in shown  # the second worker continued where the first stopped


def test_status_on_any_worker_shows_every_live_worker(
    redis_server: RedisServer, workers: Workers, tmp_path: Path
) -> None:
    import io

    from meshbot.app.status import run_status

    workers("a", FakeModel().queue("Fine."))[1].receive(dm("hello", 1))
    workers("b", FakeModel())
    local = tmp_path / "here.db"
    Store(local).close()  # this process's own store: no daemon here, only the cluster part is looked at
    cfg = load_config(overrides={"cluster.redis_url": redis_server.url, "store.path": str(local)}, environ={})
    out = io.StringIO()
    # This process's own store has no radio (it is not a worker): only the cluster part is looked at.
    wait_until(lambda: "2 worker(s) alive, 1 answered in the last hour" in _status(cfg), 10)
    run_status(cfg, out)
    text = out.getvalue()
    assert "2 worker(s) alive" in text and "\n  a (" in text and "\n  b (" in text
    workers.stop(workers.running[0])  # a stops: it says so at once
    assert "1 worker(s) alive" in _status(cfg) and "\n  a (" not in _status(cfg)


def _status(cfg: object) -> str:
    import io

    from meshbot.app.status import run_status

    out = io.StringIO()
    run_status(cfg, out)  # type: ignore[arg-type]
    return out.getvalue()


def test_a_nodes_rate_limit_holds_across_workers(redis_server: RedisServer, workers: Workers) -> None:
    limits = {"limits.per_node_burst": 2, "limits.per_node_per_hour": 1}
    a, radio_a = workers("a", FakeModel().queue("one", "three"), **limits)
    b, radio_b = workers("b", FakeModel().queue("two"), **limits)
    radio_a.receive(dm("first", 1))
    radio_b.receive(dm("second", 2))
    radio_a.receive(dm("third", 3))  # a has seen only two of ALICE's three: the shared bucket is empty
    wait_until(lambda: len(radio_a.texts()) + len(radio_b.texts()) == 3, timeout=10)
    assert sorted(radio_a.texts() + radio_b.texts()) == sorted(
        ["one", "two", "You are sending too fast; please wait 60 min."]
    )


def test_air_time_is_counted_for_the_region_not_the_worker(redis_server: RedisServer) -> None:
    from meshbot.cluster.budgets import SharedAirtime

    one, two = SharedAirtime(shared(redis_server, "a"), "EU_868"), SharedAirtime(shared(redis_server, "b"), "EU_868")
    other_region = SharedAirtime(shared(redis_server, "c"), "US")
    one.record(0.0, 1.5)
    two.record(0.0, 2.0)
    assert one.used(0.0) == two.used(0.0) == pytest.approx(3.5)
    assert other_region.used(0.0) == 0.0


def test_a_worker_whose_redis_is_unreachable_does_not_start_and_says_which_key(tmp_path: Path) -> None:
    from meshbot.cluster.shared import ClusterUnavailable
    from tests.mqtt_support import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    cfg = load_config(overrides={"radio.transport": "mqtt", "cluster.redis_url": url}, environ={})
    radio = FakeRadio(VirtualClock())
    with pytest.raises(ClusterUnavailable, match=r"cluster\.redis_url redis://127\.0\.0\.1:\d+/0"):
        build_daemon(cfg, radio=radio, model=FakeModel(), store=Store(":memory:"))


def test_a_cluster_needs_the_mqtt_transport(redis_server: RedisServer) -> None:
    from meshbot.core.config import ConfigError

    cfg = load_config(overrides={"cluster.redis_url": redis_server.url}, environ={})
    with pytest.raises(ConfigError, match="cluster.redis_url"):
        build_daemon(cfg, radio=FakeRadio(VirtualClock()), model=FakeModel(), store=Store(":memory:"))
