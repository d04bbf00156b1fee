"""Resume after a restart, expiry, the gate's limits and admin commands, and `meshbot status`."""

from __future__ import annotations

import io
import time
from pathlib import Path

from meshbot.app.compose import build_daemon
from meshbot.app.status import run_status
from meshbot.core.clock import VirtualClock
from meshbot.core.config import load_config
from meshbot.core.fragmenter import CUT_OFF, fragment
from meshbot.core.policy import Accept, Kind
from meshbot.service.daemon import Daemon
from meshbot.service.resume import APOLOGY
from meshbot.storage.store import FragmentState, QueryState, Store
from tests.conftest import wait_until
from tests.fakes import AI_TAG, ALICE, BOB, FakeModel, FakeRadio, broadcast, dm

ADMIN = 0x0AD0_0001
# What another meshbot sends first when its answer runs long: refused as a bot's.
BOT_FRAGMENT = fragment("Radio waves bend over hills and reflect off the sky at night. " * 6, 200, 3).fragments[0].text


def run_daemon(tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock, **overrides) -> Daemon:
    # One-liners like "q1" are answered at once here (multi-part joining: tests/test_joining.py).
    cfg = load_config(overrides={"join.window_s": 0, **overrides}, environ={})
    daemon = build_daemon(cfg, radio=radio, model=model, clock=clock, store=Store(tmp_path / "bot.db"))
    daemon.start()
    return daemon


def ask(store: Store, question: str, packet_id: int, sender: int = ALICE) -> int:
    return store.add_query(
        dm(question, sender=sender, packet_id=packet_id), Accept(Kind.ASK, question, sender, 0, True), seed=7
    )


def test_a_half_sent_reply_resumes_from_the_first_unacked_fragment(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    with Store(tmp_path / "bot.db") as store:  # what a killed daemon left behind
        qid = ask(store, "what is lora?", 1)
        store.set_state(qid, QueryState.GENERATING)
        for index in (1, 2, 3):
            store.add_fragment(qid, index, f"{index}/{'+' if index < 3 else 3} part {index}")
        store.generation_finished(qid)
        store.set_state(qid, QueryState.SENDING)
        store.fragment_sent(qid, 1, 111)
        store.fragment_done(qid, 1, FragmentState.ACKED)
        store.fragment_sent(qid, 2, 112)  # sent, never ACKed: the crash came first
    daemon = run_daemon(tmp_path, radio, model, clock)
    wait_until(daemon.idle)
    assert radio.texts() == ["2/+ part 2", "3/3 part 3"]
    assert daemon.store.get(qid).state is QueryState.DONE
    daemon.stop(grace_s=1)


def test_a_question_mid_generation_is_answered_again_without_the_delivered_fragments(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    long_answer = ("Radio waves bend over hills and reflect off the sky at night. " * 10).strip()
    with Store(tmp_path / "bot.db") as store:
        qid = ask(store, "how far?", 1)
        store.set_state(qid, QueryState.GENERATING)
        store.add_fragment(qid, 1, "1/+ already delivered")
        store.fragment_done(qid, 1, FragmentState.ACKED)
        waiting = ask(store, "and a second question", 2, sender=BOB)
    model.queue(long_answer, "Second answer.")
    daemon = run_daemon(tmp_path, radio, model, clock)
    wait_until(lambda: daemon.idle() and len(radio.sent) >= 3)
    alice = [s.message.text.removeprefix(AI_TAG) for s in radio.sent if s.message.dest == ALICE]
    assert alice and not any(t.startswith("1/") for t in alice)  # fragment 1 is not sent twice
    assert alice[0].startswith("2/")
    assert [s.message.text for s in radio.sent if s.message.dest == BOB] == [AI_TAG + "Second answer."]
    assert daemon.store.get(waiting).state is QueryState.DONE
    daemon.stop(grace_s=1)


def interrupted(tmp_path: Path, *fragments: tuple[str, FragmentState]) -> int:
    """A question the model was still answering when the daemon died, with these fragments stored."""
    with Store(tmp_path / "bot.db") as store:
        qid = ask(store, "how far?", 1)
        store.set_state(qid, QueryState.GENERATING)
        for index, (text, state) in enumerate(fragments, start=1):
            store.add_fragment(qid, index, text)
            if state is not FragmentState.PENDING:
                store.fragment_done(qid, index, state)
    return qid


def test_a_deterministic_model_writes_a_cut_short_answer_again_with_the_stored_seed(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    qid = interrupted(tmp_path, ("1/+ Radio waves bend over hills", FragmentState.ACKED))
    model.queue(("Radio waves bend over hills and reflect off the sky at night. " * 10).strip())
    daemon = run_daemon(tmp_path, radio, model, clock)
    wait_until(lambda: daemon.idle() and daemon.store.get(qid).state is QueryState.DONE)
    assert [r.seed for r in model.requests] == [7]  # the stored seed: the same text again
    assert radio.texts()[0].startswith("2/+ ") and CUT_OFF not in " ".join(radio.texts())
    daemon.stop(grace_s=1)


def test_a_model_that_cannot_repeat_itself_is_not_asked_again_the_stored_part_ends_cut_off(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.deterministic = False
    qid = interrupted(
        tmp_path,
        ("1/+ Radio waves bend over hills", FragmentState.ACKED),
        ("2/+ and reflect off the sky", FragmentState.PENDING),  # stored, maybe never on air
    )
    model.queue("A different answer that must not be spliced in.")
    daemon = run_daemon(tmp_path, radio, model, clock)
    wait_until(lambda: daemon.idle() and daemon.store.get(qid).state is QueryState.DONE)
    assert model.requests == []
    assert radio.texts() == [f"2/2 and reflect off the sky {CUT_OFF}"]  # the marker rides on the last one
    daemon.stop(grace_s=1)


def test_a_cut_off_marker_that_does_not_fit_goes_alone(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.deterministic = False
    full = "2/+ " + "x" * 192  # 196 bytes: no room for the marker in a 200-byte fragment
    qid = interrupted(tmp_path, ("1/+ Radio waves bend", FragmentState.ACKED), (full, FragmentState.PENDING))
    daemon = run_daemon(tmp_path, radio, model, clock)
    wait_until(lambda: daemon.idle() and daemon.store.get(qid).state is QueryState.DONE)
    assert radio.texts() == [full, f"3/3 {CUT_OFF}"]
    daemon.stop(grace_s=1)


def test_a_cut_off_marker_after_a_delivered_fragment_goes_alone(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.deterministic = False
    qid = interrupted(tmp_path, ("1/+ Radio waves bend", FragmentState.ACKED))  # already on the handset
    daemon = run_daemon(tmp_path, radio, model, clock)
    wait_until(lambda: daemon.idle() and daemon.store.get(qid).state is QueryState.DONE)
    assert radio.texts() == [f"2/2 {CUT_OFF}"] and model.requests == []
    daemon.stop(grace_s=1)


def test_without_anything_stored_a_model_that_cannot_repeat_itself_still_answers(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.deterministic = False
    qid = interrupted(tmp_path)  # died before the first fragment: nothing to splice
    model.queue("LoRa reaches kilometres.")
    daemon = run_daemon(tmp_path, radio, model, clock)
    wait_until(lambda: daemon.idle() and daemon.store.get(qid).state is QueryState.DONE)
    assert radio.texts() == ["LoRa reaches kilometres."]
    daemon.stop(grace_s=1)


def test_a_stale_question_is_dropped_with_an_apology(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    old = time.time() - 3600
    with Store(tmp_path / "bot.db", wall=lambda: old) as store:
        qid = ask(store, "an hour ago", 1)
    daemon = run_daemon(tmp_path, radio, model, clock, **{"store.max_age_s": 600})
    wait_until(daemon.idle)
    assert radio.texts() == [APOLOGY]
    assert daemon.store.get(qid).state is QueryState.DROPPED
    daemon.stop(grace_s=1)


def test_a_redelivery_after_restart_is_not_answered_again(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("Once.")
    daemon = run_daemon(tmp_path, radio, model, clock)
    radio.receive(dm("hello?", packet_id=42))
    wait_until(lambda: daemon.idle() and len(radio.sent) == 1)
    daemon.stop(grace_s=1)
    again = run_daemon(tmp_path, radio, model, clock)
    radio.receive(dm("hello?", packet_id=42))
    wait_until(again.idle)
    assert radio.texts() == ["Once."]
    again.stop(grace_s=1)


def test_limits_deny_bots_repeats_and_one_notice(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue(*[f"Answer {i}." for i in range(10)])
    daemon = run_daemon(
        tmp_path,
        radio,
        model,
        clock,
        **{"limits.deny": ["!0b0b0000"], "limits.per_node_burst": 2, "limits.per_node_per_hour": 1},
    )
    radio.receive(dm("hi", sender=BOB, packet_id=1))  # denied
    radio.receive(dm("🤖 2/+ looks like another bot", packet_id=2))  # its AI tag gives it away
    radio.receive(dm("question one", packet_id=3))
    radio.receive(dm("question one", packet_id=4))  # a repeat
    radio.receive(dm("question two", packet_id=5))
    for n in range(6, 10):  # over the burst: one notice, then silence
        radio.receive(dm(f"flood {n}", packet_id=n))
    wait_until(daemon.idle)
    texts = radio.texts()
    assert texts.count("You are sending too fast; please wait 60 min.") == 1
    assert sum(t.startswith("Answer") for t in texts) == 2
    asked = [q.question for q in map(daemon.store.get, range(1, 12)) if q is not None]
    assert asked == ["question one", "question two"]  # not the bot's fragment, not the repeat
    assert all(s.message.dest == ALICE for s in radio.sent)
    daemon.stop(grace_s=1)


def test_admin_commands_only_from_admins_by_dm(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("Type !pause to pause me.", "Answer while paused.")
    daemon = run_daemon(tmp_path, radio, model, clock, **{"limits.admins": ["!0ad00001"]})
    radio.receive(dm("!pause", packet_id=1))  # not an admin: nothing happens
    radio.receive(dm("say the pause word", packet_id=2))  # the answer contains !pause: nothing happens
    wait_until(lambda: daemon.idle() and len(radio.sent) == 1)
    assert not daemon.paused.is_set()
    radio.receive(broadcast("!ai !pause", sender=ADMIN, packet_id=3))  # on a channel: nothing
    radio.receive(dm("!pause", sender=ADMIN, packet_id=4))
    wait_until(lambda: daemon.paused.is_set() and daemon.sender.idle())
    radio.receive(dm("a question while paused", packet_id=5))
    time.sleep(0.3)
    assert not any(t == "Answer while paused." for t in radio.texts())
    radio.receive(dm("!stats", sender=ADMIN, packet_id=6))
    radio.receive(dm("!resume", sender=ADMIN, packet_id=7))
    wait_until(lambda: "Answer while paused." in radio.texts())
    to_admin = [s.message.text.removeprefix(AI_TAG) for s in radio.sent if s.message.dest == ADMIN]
    assert to_admin[0].startswith("Paused") and "answered" in to_admin[1] and to_admin[2] == "Resumed."
    daemon.stop(grace_s=1)


def test_status_reports_and_exits_by_health(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("Fine.")
    daemon = run_daemon(tmp_path, radio, model, clock)
    radio.receive(dm("ok?", packet_id=1))
    wait_until(lambda: daemon.idle() and daemon.store.status()["last_hour"]["answered"] == 1)
    cfg = load_config(overrides={"store.path": str(tmp_path / "bot.db")}, environ={})
    out = io.StringIO()
    assert run_status(cfg, out) == 0
    assert "1 answered" in out.getvalue() and "healthy" in out.getvalue()
    daemon.store.record_event("radio-down")  # the daemon runs, its radio is away
    out = io.StringIO()
    assert run_status(cfg, out) == 1
    assert "UNHEALTHY: radio not connected" in out.getvalue()
    daemon.stop(grace_s=1)
    out = io.StringIO()
    assert run_status(cfg, out) == 1
    assert "NOT RUNNING: it stopped cleanly" in out.getvalue() and "UNHEALTHY: not running" in out.getvalue()


def test_a_fragment_on_air_before_a_crash_goes_again_under_its_packet_id(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    # A handset that got it before the crash drops the copy; one that did not shows it once.
    with Store(tmp_path / "bot.db") as store:
        qid = ask(store, "what is lora?", 1)
        store.set_state(qid, QueryState.GENERATING)
        for index in (1, 2):
            store.add_fragment(qid, index, f"{index}/{'+' if index < 2 else 2} part {index}")
        store.generation_finished(qid)
        store.set_state(qid, QueryState.SENDING)
        store.fragment_sent(qid, 1, 4111)  # on air, never ACKed: the crash came first
    daemon = run_daemon(tmp_path, radio, model, clock)
    wait_until(daemon.idle)
    first = radio.sent[0]
    assert (first.message.text, first.packet_id) == ("1/+ part 1", 4111)
    assert radio.sent[1].message.packet_id is None  # never on air: a new id
    daemon.stop(grace_s=1)
