"""Durable state: what must still be true after a restart, a kill -9, or four threads at once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbot.core.domain import Inbound
from meshbot.core.policy import Accept, Kind
from meshbot.storage.store import SCHEMA_VERSION, FragmentState, QueryState, Store, StoreError
from tests.fakes import ALICE, BOB, dm

REPO = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0  # a wall-clock epoch time


class FakeWall:
    """A settable wall clock, injected instead of time.time."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def wall() -> FakeWall:
    return FakeWall()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "meshbot.db"


@pytest.fixture
def store(db_path: Path, wall: FakeWall) -> Iterator[Store]:
    s = Store(db_path, wall=wall)
    yield s
    s.close()


def ask(
    question: str = "what is lora?", *, sender: int = ALICE, packet_id: int = 7, kind: Kind = Kind.ASK
) -> tuple[Inbound, Accept]:
    """An inbound DM and the policy's Accept for it."""
    return dm(question, sender=sender, packet_id=packet_id), Accept(kind, question, sender, 0, True)


def test_half_sent_reply_survives_restart(db_path: Path, wall: FakeWall) -> None:
    first = Store(db_path, wall=wall)
    qid = first.add_query(*ask("qu'est-ce que LoRa ? 📡"), seed=1234)
    first.set_state(qid, QueryState.GENERATING)
    for i, text in enumerate(["part one", "part two", "part three"]):
        first.add_fragment(qid, i, text)
    first.generation_finished(qid)
    first.set_state(qid, QueryState.SENDING)
    for i in range(3):
        first.fragment_sent(qid, i, packet_id=500 + i)
    first.fragment_done(qid, 0, FragmentState.ACKED)
    first.fragment_done(qid, 1, FragmentState.ACKED)
    first.close()

    wall.t += 120  # rebooted two minutes later
    [q] = Store(db_path, wall=wall).unfinished()
    assert (q.query_id, q.sender, q.packet_id, q.kind, q.seed) == (qid, ALICE, 7, "ask", 1234)
    assert q.question == "qu'est-ce que LoRa ? 📡"
    assert (q.reply_to, q.reply_channel, q.want_ack, q.is_dm) == (ALICE, 0, True, True)
    assert q.state is QueryState.SENDING and q.generation_done and q.accepted_at == T0
    assert [f.state for f in q.fragments] == [FragmentState.ACKED, FragmentState.ACKED, FragmentState.SENT]
    assert [(f.packet_id, f.attempts) for f in q.fragments] == [(500, 1), (501, 1), (502, 1)]
    assert q.first_unacked is not None and q.first_unacked.index == 2
    assert q.first_unacked.text == "part three"


def test_finished_queries_are_not_resumed(store: Store) -> None:
    done = store.add_query(*ask(packet_id=1), seed=1)
    failed = store.add_query(*ask(packet_id=2), seed=2)
    waiting = store.add_query(*ask(packet_id=3, sender=BOB), seed=3)
    store.set_state(done, QueryState.DONE)
    store.set_state(failed, QueryState.FAILED, "radio refused")
    assert [q.query_id for q in store.unfinished()] == [waiting]
    assert store.get(done).state is QueryState.DONE  # type: ignore[union-attr]
    assert store.get(9999) is None


def test_unfinished_is_oldest_first(store: Store, wall: FakeWall) -> None:
    ids = []
    for n in range(4):
        ids.append(store.add_query(*ask(packet_id=n), seed=n))
        wall.t += 1
    store.set_state(ids[0], QueryState.SENDING)
    assert [q.query_id for q in store.unfinished()] == ids


def test_regenerated_fragment_keeps_what_already_went_on_air(store: Store) -> None:
    qid = store.add_query(*ask(), seed=5)
    store.add_fragment(qid, 0, "sent text")
    store.add_fragment(qid, 1, "old pending")
    store.fragment_sent(qid, 0, packet_id=42)
    store.add_fragment(qid, 0, "different text")
    store.add_fragment(qid, 1, "new pending")
    q = store.get(qid)
    assert q is not None and [f.text for f in q.fragments] == ["sent text", "new pending"]


def test_resending_counts_attempts(store: Store) -> None:
    qid = store.add_query(*ask(), seed=5)
    store.add_fragment(qid, 0, "x")
    store.fragment_sent(qid, 0, packet_id=1)
    store.fragment_sent(qid, 0, packet_id=2)
    [frag] = store.get(qid).fragments  # type: ignore[union-attr]
    assert (frag.packet_id, frag.attempts, frag.state) == (2, 2, FragmentState.SENT)


def test_bad_calls_fail_loudly(store: Store) -> None:
    qid = store.add_query(*ask(), seed=5)
    with pytest.raises(KeyError):
        store.fragment_sent(qid, 3, packet_id=1)
    with pytest.raises(KeyError):
        store.set_state(qid + 1, QueryState.DONE)
    store.add_fragment(qid, 0, "x")
    with pytest.raises(ValueError):
        store.fragment_done(qid, 0, FragmentState.PENDING)


def test_seen_packets_are_remembered_across_restarts(db_path: Path, wall: FakeWall) -> None:
    first = Store(db_path, wall=wall)
    assert first.mark_seen(ALICE, 99) is True
    assert first.mark_seen(ALICE, 99) is False
    assert first.mark_seen(BOB, 99) is True  # packet ids are per sender
    first.close()
    second = Store(db_path, wall=wall)
    assert second.mark_seen(ALICE, 99) is False
    assert second.mark_seen(ALICE, 100) is True
    second.close()


def test_same_text_within_window_is_recognised(store: Store, wall: FakeWall) -> None:
    assert store.recent_text_seen(ALICE, "What is LoRa?", window_s=300) is False
    wall.t += 60
    assert store.recent_text_seen(ALICE, "  what is   lora? ", window_s=300) is True
    assert store.recent_text_seen(BOB, "What is LoRa?", window_s=300) is False
    assert store.recent_text_seen(ALICE, "What is Meshtastic?", window_s=300) is False
    wall.t += 300  # 360 s after the first: asking again is a new question
    assert store.recent_text_seen(ALICE, "What is LoRa?", window_s=300) is False


def test_expire_drops_only_old_unfinished(store: Store, wall: FakeWall) -> None:
    old = store.add_query(*ask(packet_id=1), seed=1)
    old_done = store.add_query(*ask(packet_id=2), seed=2)
    store.set_state(old_done, QueryState.DONE)
    wall.t += 500
    young = store.add_query(*ask(packet_id=3), seed=3)
    wall.t += 500
    dropped = store.expire(max_age_s=700)
    assert [(q.query_id, q.state) for q in dropped] == [(old, QueryState.DROPPED)]
    assert [q.query_id for q in store.unfinished()] == [young]
    assert store.get(old_done).state is QueryState.DONE  # type: ignore[union-attr]
    assert store.expire(max_age_s=700) == []
    assert store.status()["last_hour"]["dropped"] == 1


def test_remainder_for_more_survives_restart_and_is_taken_once(db_path: Path, wall: FakeWall) -> None:
    first = Store(db_path, wall=wall)
    first.put_remainder(ALICE, "the rest of the answer", next_index=3)
    first.close()
    second = Store(db_path, wall=wall)
    assert second.take_remainder(BOB, max_age_s=600) is None
    assert second.take_remainder(ALICE, max_age_s=600) == ("the rest of the answer", 3)
    assert second.take_remainder(ALICE, max_age_s=600) is None
    second.put_remainder(ALICE, "stale", next_index=1)
    wall.t += 601
    assert second.take_remainder(ALICE, max_age_s=600) is None
    second.close()


def test_status_counts_the_last_hour_and_day(store: Store, wall: FakeWall) -> None:
    def finish(state: QueryState, n: int) -> None:
        for _ in range(n):
            qid = store.add_query(*ask(), seed=0)
            store.set_state(qid, state)
            store.set_state(qid, state)  # repeated: still counted once

    store.record_event("radio-up")
    finish(QueryState.DONE, 2)
    store.record_event("ttff", 30.0)
    wall.t += 2 * 3600  # older ones fall out of the hour but not the day
    store.record_event("radio-down")
    store.record_event("radio-up")
    up_at = wall.t
    finish(QueryState.DONE, 3)
    finish(QueryState.FAILED, 1)
    store.record_event("ttff", 4.0)
    store.record_event("ttff", 6.0)
    store.record_event("airtime", 1.9)
    store.record_event("airtime", 2.1)
    store.add_query(*ask(), seed=0)
    generating = store.add_query(*ask(), seed=0)
    store.set_state(generating, QueryState.GENERATING)
    wall.t += 10

    s = store.status()
    assert (s["queue_depth"], s["in_progress"]) == (1, 1)
    assert s["last_hour"] == {"answered": 3, "failed": 1, "dropped": 0}
    assert s["last_day"] == {"answered": 5, "failed": 1, "dropped": 0}
    assert s["ttff_mean_last_hour_s"] == pytest.approx(5.0)
    assert s["airtime_last_hour_s"] == pytest.approx(4.0)
    assert s["radio_up_since"] == up_at
    assert s["last_event_at"] == up_at
    store.record_event("radio-down")
    assert store.status()["radio_up_since"] is None
    assert store.status(now=T0 + 1)["radio_up_since"] == T0  # as it looked back then


def test_status_of_an_empty_database(store: Store) -> None:
    s = store.status()
    assert s["queue_depth"] == 0 and s["last_day"] == {"answered": 0, "failed": 0, "dropped": 0}
    assert s["ttff_mean_last_hour_s"] is None and s["airtime_last_hour_s"] == 0
    assert s["radio_up_since"] is None and s["last_event_at"] is None


def test_prune_forgets_old_history_but_not_work_or_the_radio(store: Store, wall: FakeWall) -> None:
    store.record_event("radio-up")
    store.mark_seen(ALICE, 1)
    done = store.add_query(*ask(), seed=0)
    store.add_fragment(done, 0, "x")
    store.set_state(done, QueryState.DONE)
    waiting = store.add_query(*ask(), seed=0)
    wall.t += 8 * 86400
    store.mark_seen(ALICE, 2)
    assert store.prune(keep_days=7) >= 4
    assert store.get(done) is None
    assert store.get(waiting) is not None  # unfinished work is expire()'s business, not prune's
    assert store.mark_seen(ALICE, 1) is True  # forgotten
    assert store.mark_seen(ALICE, 2) is False  # recent, kept
    assert store.status()["radio_up_since"] == T0  # a week of quiet uptime is still known


def test_wal_mode_and_schema_version(db_path: Path, store: Store) -> None:
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_database_from_a_newer_meshbot_is_refused(db_path: Path, wall: FakeWall) -> None:
    Store(db_path, wall=wall).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer meshbot"):
        Store(db_path, wall=wall)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "not.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not.db"):
        Store(bad)


def test_in_memory_database_works(wall: FakeWall) -> None:
    with Store(":memory:", wall=wall) as mem:
        qid = mem.add_query(*ask(), seed=1)
        assert [q.query_id for q in mem.unfinished()] == [qid]


def test_rows_survive_without_close(db_path: Path, wall: FakeWall) -> None:
    crashed = Store(db_path, wall=wall)  # never closed, as after a crash
    qid = crashed.add_query(*ask(), seed=9)
    crashed.mark_seen(ALICE, 7)
    reopened = Store(db_path, wall=wall)
    assert [q.query_id for q in reopened.unfinished()] == [qid]
    assert reopened.mark_seen(ALICE, 7) is False
    reopened.close()
    crashed.close()  # only now, so the reopen above saw no clean shutdown


_KILLED_WRITER = """
import os, signal, sys
from meshbot.core.domain import Inbound
from meshbot.core.policy import Accept, Kind
from meshbot.storage.store import FragmentState, Store
from tests.fakes import dm
store = Store(sys.argv[1])
qid = store.add_query(dm("still there?", packet_id=77), Accept(Kind.ASK, "still there?", 1, 0, True), seed=3)
store.add_fragment(qid, 0, "yes")
store.fragment_sent(qid, 0, 1234)
store.fragment_done(qid, 0, FragmentState.ACKED)
store.mark_seen(1, 77)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_keeps_every_committed_write(db_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(db_path)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Store(db_path) as after:
        [q] = after.unfinished()
        assert q.question == "still there?" and q.fragments[0].state is FragmentState.ACKED
        assert after.mark_seen(1, 77) is False


def test_four_threads_at_once_lose_nothing(db_path: Path) -> None:
    store = Store(db_path)
    errors: list[BaseException] = []
    per_thread = 40

    def work(t: int) -> None:
        try:
            for n in range(per_thread):
                sender = 0x1000 + t
                assert store.mark_seen(sender, n)
                qid = store.add_query(*ask(f"q{t}-{n}", sender=sender, packet_id=n), seed=n)
                store.add_fragment(qid, 0, "a")
                store.fragment_sent(qid, 0, packet_id=n)
                store.fragment_done(qid, 0, FragmentState.ACKED)
                store.set_state(qid, QueryState.DONE if n % 2 else QueryState.SENDING)
                store.record_event("airtime", 1.0)
                store.status()
                store.unfinished()
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert errors == []
    store.close()
    with Store(db_path) as after:
        assert len(after.unfinished()) == 4 * per_thread // 2
        s = after.status()
        assert s["last_hour"]["answered"] == 4 * per_thread // 2
        assert s["airtime_last_hour_s"] == 4 * per_thread
        assert all(after.mark_seen(0x1000 + t, n) is False for t in range(4) for n in range(per_thread))


def test_store_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    with Store(path):
        pass
    assert path.exists()


def test_uint32_ids_round_trip(store: Store) -> None:
    # uint32 node numbers and packet ids above 2**31 must come back unchanged.
    inbound = dm("hi", sender=0xFFFFFFFE, packet_id=0xFFFFFFF0)
    qid = store.add_query(inbound, Accept(Kind.MORE, "more", 0xFFFFFFFF, 7, False), seed=2**32 - 1)
    q = store.get(qid)
    assert q is not None
    assert (q.sender, q.packet_id, q.reply_to, q.reply_channel, q.kind) == (
        0xFFFFFFFE,
        0xFFFFFFF0,
        0xFFFFFFFF,
        7,
        "more",
    )
    assert q.want_ack is False and q.seed == 2**32 - 1
