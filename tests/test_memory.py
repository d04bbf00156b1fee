"""Per-node conversation memory with a fake model: what each prompt carries, and what it never carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon, conversation_memory
from meshbot.core.clock import VirtualClock
from meshbot.core.config import Config, load_config
from meshbot.core.domain import ChatTurn, Generation
from meshbot.core.policy import Accept, Kind
from meshbot.service.daemon import Daemon
from meshbot.storage.memory import Asked, Exchange, MemoryTable
from meshbot.storage.store import QueryState, Store
from tests.conftest import wait_until
from tests.fakes import ALICE, BOB, FakeModel, FakeRadio, broadcast, dm


def start(radio: FakeRadio, model: FakeModel, clock: VirtualClock, store: Store, **overrides) -> Daemon:
    # A conversation is more questions in a row than the default per-node burst allows; one-line questions are
    # answered at once (no join window); channel 0 is the public one here, enabled on purpose. The shipped
    # reference is off: these tests read the prompt's turns, not the notes a question finds.
    base = {
        "answers.reference": False,
        "limits.per_node_burst": 20,
        "join.window_s": 0,
        "policy.channels": [{"index": 0, "public": True, "cooldown_s": 0}],
    }
    cfg = load_config(overrides={**base, **overrides}, environ={})
    daemon = build_daemon(cfg, radio=radio, model=model, clock=clock, store=store)
    daemon.start()
    return daemon


def ask(daemon: Daemon, radio: FakeRadio, model: FakeModel, msg) -> Generation:
    """Deliver one question and return the prompt the model got for it."""
    before = len(model.requests)
    radio.receive(msg)
    wait_until(lambda: len(model.requests) == before + 1 and daemon.idle())
    return model.requests[-1]


def history(request: Generation) -> list[tuple[str, str]]:
    """The turns between the system prompt and the question."""
    return [(t.role, t.content) for t in request.turns[1:-1]]


def everything(request: Generation) -> str:
    return "\n".join(t.content for t in request.turns)


@pytest.fixture
def daemon(radio: FakeRadio, model: FakeModel, clock: VirtualClock):
    made = start(radio, model, clock, Store(":memory:", wall=clock.now))
    yield made
    made.stop(grace_s=1)


def test_the_second_prompt_contains_the_first_exchange(daemon: Daemon, radio: FakeRadio, model: FakeModel) -> None:
    model.queue("LoRa is long range radio.", "About ten kilometres.")
    first = ask(daemon, radio, model, dm("what is lora?", packet_id=1))
    second = ask(daemon, radio, model, dm("how far does it reach?", packet_id=2))
    assert history(first) == []
    assert history(second) == [("user", "what is lora?"), ("assistant", "LoRa is long range radio.")]
    assert second.turns[-1] == ChatTurn("user", "how far does it reach?")
    assert second.turns[0].role == "system"


def test_after_forget_the_conversation_is_gone_and_others_stay(
    daemon: Daemon, radio: FakeRadio, model: FakeModel
) -> None:
    model.queue("Boil it ten minutes.", "On channel: pasta.", "Sure.", "Still pasta.")
    ask(daemon, radio, model, dm("how do I cook an egg?", packet_id=1))
    ask(daemon, radio, model, broadcast("!ai what is for dinner?", packet_id=2))
    memory = conversation_memory(Config(), daemon.store)
    memory.forget(ALICE, None)  # what `!reset` in a DM calls
    after_reset = ask(daemon, radio, model, dm("and how long should I boil it?", packet_id=3))
    channel = ask(daemon, radio, model, broadcast("!ai and dessert?", packet_id=4))
    assert history(after_reset) == []
    assert "egg" not in everything(after_reset)
    # The channel conversation was not the one reset.
    assert history(channel) == [("user", "what is for dinner?"), ("assistant", "On channel: pasta.")]


def test_a_channel_users_history_never_reaches_another_users_prompt(
    daemon: Daemon, radio: FakeRadio, model: FakeModel
) -> None:
    model.queue("Noted, your code is 4242.", "I do not know your code.", "Your code is 4242.", "Hi.")
    ask(daemon, radio, model, broadcast("!ai remember my code 4242", sender=ALICE, packet_id=1))
    bob = ask(daemon, radio, model, broadcast("!ai what is my code?", sender=BOB, packet_id=2))
    alice = ask(daemon, radio, model, broadcast("!ai what is my code?", sender=ALICE, packet_id=3))
    alice_dm = ask(daemon, radio, model, dm("hello", sender=ALICE, packet_id=4))
    assert "4242" not in everything(bob)
    assert history(bob) == []
    assert history(alice)[0] == ("user", "remember my code 4242")
    assert "4242" not in everything(alice_dm)  # her DM is another conversation than her channel thread


def test_history_survives_a_restart(tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock) -> None:
    model.queue("Mesh nodes relay each other's packets.", "Up to seven hops.")
    first = start(radio, model, clock, Store(tmp_path / "bot.db"))
    ask(first, radio, model, dm("how does a mesh work?", packet_id=1))
    first.stop(grace_s=1)
    again = start(radio, model, clock, Store(tmp_path / "bot.db"))
    follow_up = ask(again, radio, model, dm("how many hops?", packet_id=2))
    again.stop(grace_s=1)
    assert history(follow_up) == [
        ("user", "how does a mesh work?"),
        ("assistant", "Mesh nodes relay each other's packets."),
    ]


def test_an_idle_conversation_is_forgotten(
    daemon: Daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    model.queue("One.", "Two.", "Three.")
    ask(daemon, radio, model, dm("first question", packet_id=1))
    clock.advance(29 * 60)  # under the default 30 min
    second = ask(daemon, radio, model, dm("second question", packet_id=2))
    clock.advance(31 * 60)
    third = ask(daemon, radio, model, dm("third question", packet_id=3))
    assert history(second) == [("user", "first question"), ("assistant", "One.")]
    assert history(third) == []
    assert [r.exchanges for r in caplog.records if getattr(r, "event", None) == "memory-expired"] == [2]


def test_the_token_bound_leaves_out_the_oldest_exchanges_first(
    radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    answer = "word " * 11 + "end."  # 60 bytes
    model.queue(*[answer] * 4)
    # Without a tokenizer an exchange is counted by bytes: 14 + 40 + 12 = 66 tokens; 140 leaves room for two.
    daemon = start(radio, model, clock, Store(":memory:"), **{"memory.max_history_tokens": 140, "memory.turns": 10})
    for n in range(1, 5):
        last = ask(daemon, radio, model, dm(f"question {n:02d}", packet_id=n))
    daemon.stop(grace_s=1)
    assert [content for role, content in history(last) if role == "user"] == ["question 02", "question 03"]


@pytest.mark.parametrize("bounds", [{"memory.max_history_tokens": 140, "memory.turns": 10}, {"memory.turns": 2}])
def test_the_history_promised_to_the_backend_is_the_one_the_next_prompt_carries(
    radio: FakeRadio, model: FakeModel, clock: VirtualClock, bounds: dict
) -> None:
    # A backend that keeps states settles each to the history the conversation's next prompt will carry (the
    # llama backend shifts the oldest exchange out there, off the next question's path): the promise must hold
    # as the bounds leave exchanges out, by tokens or by turns.
    model.queue(*["word " * (3 + 4 * n) + "end." for n in range(6)])
    daemon = start(radio, model, clock, Store(":memory:"), **bounds)
    requests = [ask(daemon, radio, model, dm(f"question {n:02d}", packet_id=n)) for n in range(1, 7)]
    daemon.stop(grace_s=1)
    assert len(history(requests[-1])) < 10  # the bound left exchanges out
    for n, (this, following) in enumerate(zip(requests, requests[1:], strict=False), 1):
        kept = following.turns[-2].content  # this answer as memory kept it
        assert this.next_history is not None
        promised = this.next_history(f"question {n:02d}", kept)
        assert [(t.role, t.content) for t in promised] == history(following)


def test_the_turn_bound_keeps_the_newest_exchanges(radio: FakeRadio, model: FakeModel, clock: VirtualClock) -> None:
    model.queue("A1.", "A2.", "A3.", "A4.")
    daemon = start(radio, model, clock, Store(":memory:"), **{"memory.turns": 2})
    for n in range(1, 5):
        last = ask(daemon, radio, model, dm(f"question {n}", packet_id=n))
    with daemon.store._tx() as conn:
        stored = conn.execute("SELECT COUNT(*) FROM turns").fetchone()[0]
    daemon.stop(grace_s=1)
    assert history(last) == [("user", "question 2"), ("assistant", "A2."), ("user", "question 3"), ("assistant", "A3.")]
    # The table keeps one more than a prompt can use: resume must see that a history left an exchange out.
    assert stored == 3


def test_no_history_when_the_context_window_has_no_room_for_it(
    radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.queue("One.", "Two.")
    # 256 tokens of context, 200 of them for the reply: the system prompt and question take the rest.
    daemon = start(radio, model, clock, Store(":memory:"), **{"model.n_ctx": 256, "model.max_tokens_cap": 200})
    ask(daemon, radio, model, dm("first question", packet_id=1))
    second = ask(daemon, radio, model, dm("second question", packet_id=2))
    daemon.stop(grace_s=1)
    assert history(second) == []
    assert second.turns[-1].content == "second question"


def test_memory_can_be_turned_off(radio: FakeRadio, model: FakeModel, clock: VirtualClock) -> None:
    model.queue("One.", "Two.")
    daemon = start(radio, model, clock, Store(":memory:"), **{"memory.enabled": False})
    ask(daemon, radio, model, dm("first question", packet_id=1))
    second = ask(daemon, radio, model, dm("second question", packet_id=2))
    daemon.stop(grace_s=1)
    assert history(second) == []


def test_a_resumed_question_is_answered_with_the_history_it_was_asked_with(
    tmp_path: Path, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    with Store(tmp_path / "bot.db") as store:  # what a daemon killed mid-answer left behind
        table = MemoryTable(store)
        earlier = Exchange("what is lora?", "Long range radio.", 30, table.now())
        table.add(ALICE, None, Asked(1, ALICE, 1), earlier, keep=6, idle_s=1800)
        question = "how far does it reach?"
        qid = store.add_query(dm(question, packet_id=2), Accept(Kind.ASK, question, ALICE, 0, True), seed=7)
        store.set_state(qid, QueryState.GENERATING)
        table.save_snapshot(Asked(qid, ALICE, 2), ALICE, None, [earlier])
        # After it started, the conversation changed (a `!reset`): the question keeps what it was asked with.
        table.forget(ALICE, None)
    model.queue("About ten kilometres.")
    daemon = start(radio, model, clock, Store(tmp_path / "bot.db"))
    wait_until(lambda: daemon.idle() and len(model.requests) == 1)
    assert history(model.requests[0]) == [("user", "what is lora?"), ("assistant", "Long range radio.")]
    assert daemon.store.get(qid).state is QueryState.DONE
    remembered = MemoryTable(daemon.store).recent(ALICE, None, 10)
    daemon.stop(grace_s=1)
    assert [(e.question, e.answer) for e in remembered] == [(question, "About ten kilometres.")]


def test_prune_removes_idle_conversations_and_stale_snapshots(clock: VirtualClock) -> None:
    store = Store(":memory:", wall=clock.now)
    table = MemoryTable(store)
    table.add(ALICE, None, Asked(1, ALICE, 1), Exchange("q", "a", 5, clock.now()), keep=6, idle_s=1800)
    table.add(BOB, 3, Asked(2, BOB, 2), Exchange("q", "a", 5, clock.now()), keep=6, idle_s=1800)
    table.save_snapshot(Asked(99, BOB, 99), BOB, 3, [])  # a question that was later dropped: no such open query
    clock.advance(1000)
    table.add(BOB, 3, Asked(3, BOB, 3), Exchange("q2", "a2", 5, clock.now()), keep=6, idle_s=1800)
    clock.advance(1000)  # Alice idle 2000 s, Bob 1000 s
    store.prune()
    assert table.recent(ALICE, None, 10) == []
    assert [e.question for e in table.recent(BOB, 3, 10)] == ["q", "q2"]  # a conversation expires as a whole
    assert table.snapshot(Asked(99, BOB, 99)) is None
    store.close()
