"""Resume after a crash of a question whose conversation had left old exchanges out of its prompt.

From that turn on, the llama backend serves the conversation from a saved state with the left-out tokens shifted
out (models.kv_shift); a fresh evaluation after a restart would not write the same text, so such a question is
finished from its stored fragments, never regenerated and spliced.
"""

from __future__ import annotations

from pathlib import Path

from meshbot.app.compose import build_daemon
from meshbot.core.clock import VirtualClock
from meshbot.core.config import load_config
from meshbot.core.fragmenter import CUT_OFF
from meshbot.core.policy import Accept, Kind
from meshbot.storage.memory import Asked, Exchange, MemoryTable
from meshbot.storage.store import FragmentState, QueryState, Store
from tests.conftest import wait_until
from tests.fakes import ALICE, FakeModel, FakeRadio, dm

OLD = Exchange("Tell me about lakes.", "Lakes are bodies of water. " * 20, 140, 1000.0)
NEWER = Exchange("And rivers?", "Rivers flow to the sea. " * 20, 120, 1010.0)
LONG = ("Radio waves bend over hills and reflect off the sky at night. " * 10).strip()


def crashed_follow_up(tmp_path: Path, history: list[Exchange]) -> int:
    """A follow-up the model was answering when the daemon died (fragment 1 delivered), asked with `history`."""
    with Store(tmp_path / "bot.db") as store:
        table = MemoryTable(store)
        for n, exchange in enumerate((OLD, NEWER), start=1):
            table.add(ALICE, None, Asked(100 + n, ALICE, 100 + n), exchange, 7, 1e9)
        qid = store.add_query(
            dm("and lakes at night?", packet_id=1), Accept(Kind.ASK, "and lakes at night?", ALICE, 0, True), 7
        )
        table.save_snapshot(Asked(qid, ALICE, 1), ALICE, None, history)
        store.set_state(qid, QueryState.GENERATING)
        store.add_fragment(qid, 1, "1/+ Radio waves bend over hills")
        store.fragment_done(qid, 1, FragmentState.ACKED)
    return qid


def restart(tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock, qid: int) -> None:
    cfg = load_config(overrides={"join.window_s": 0}, environ={})
    daemon = build_daemon(cfg, radio=radio, model=model, clock=clock, store=Store(tmp_path / "bot.db"))
    daemon.start()
    try:
        wait_until(lambda: daemon.idle() and daemon.store.get(qid).state is QueryState.DONE)
    finally:
        daemon.stop(grace_s=1)


def test_a_follow_up_whose_history_left_an_exchange_out_ends_from_what_is_stored(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    qid = crashed_follow_up(tmp_path, [NEWER])  # OLD is remembered but was left out of this prompt
    model.queue("A different answer that must not be spliced in.")
    restart(tmp_path, radio, model, clock, qid)
    assert model.requests == []
    assert radio.texts() == [f"2/2 {CUT_OFF}"]


def test_a_follow_up_asked_with_its_whole_history_is_written_again(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    qid = crashed_follow_up(tmp_path, [OLD, NEWER])
    model.queue(LONG)
    restart(tmp_path, radio, model, clock, qid)
    assert [r.seed for r in model.requests] == [7]  # written again with its stored seed and history
    assert [t.content for t in model.requests[0].turns[1:3]] == [OLD.question, OLD.answer]
    assert radio.texts()[0].startswith("2/+ ") and CUT_OFF not in " ".join(radio.texts())
