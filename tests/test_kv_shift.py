"""The KV context shift: where a saved state can serve a prompt that left its oldest exchange out (pure), and,
with the real bundled model, that a conversation past its history bound still evaluates only its new question,
also after answers cut at the token cap and tidied into text the model did not write token for token."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbot.core.config import Config
from meshbot.core.domain import Context, GenerationStats, Inbound
from meshbot.core.policy import Accept, Kind
from meshbot.core.prompting import build_generation
from meshbot.models.kv_shift import MIN_KEPT_TOKENS, find_shift
from meshbot.service.answering import AnswerStream
from meshbot.service.memory import ConversationMemory
from meshbot.service.queueing import Query
from meshbot.storage.memory import MemoryTable
from meshbot.storage.store import Store

runs = st.lists(st.integers(0, 6), max_size=80)
JOINT = [5, 6]  # the template's tokens between an answer and the next question


@given(runs, runs, runs, runs)
def test_a_shift_found_keeps_tokens_the_prompt_has_at_those_places_and_drops_whole_exchanges(
    head, dropped, kept, rest
) -> None:
    saved, prompt = head + dropped + kept, head + kept + rest
    plan = find_shift(saved, prompt, JOINT, min_kept=4)
    if plan is None:
        return
    start = plan.head + plan.dropped
    assert plan.dropped > 0 and plan.kept >= 4
    assert saved[: plan.head] == prompt[: plan.head]
    # The kept run, moved down by the dropped block's length, is exactly the prompt's tokens at its new place.
    assert saved[start : start + plan.kept] == prompt[plan.head : plan.reused]
    # Whole exchanges: the dropped block ends where a question begins, and the kept run spans an answer's end.
    assert saved[start - 2 : start] == JOINT
    assert any(saved[i : i + 2] == JOINT for i in range(start, start + plan.kept - 1))


def test_the_oldest_exchange_dropped_leaves_the_rest_of_the_state_usable() -> None:
    system, old, newer, question = [1, 2, 3], [7] * 60 + JOINT, [9, 10] * 30 + JOINT + [9] * 20, [11, 12]
    plan = find_shift([*system, *old, *newer, 4], system + newer + question, JOINT)
    assert plan is not None
    assert (plan.head, plan.dropped, plan.kept) == (3, 62, 82)
    assert MIN_KEPT_TOKENS > 8


def test_a_dropped_question_that_begins_like_the_next_one_still_leaves_a_shift() -> None:
    # "How far ...?" dropped, "How high ...?" kept: the prompt shares the kept question's first token with the
    # dropped one, right after the system prompt.
    system, how = [1, 2, 3, *JOINT], 8
    old, newer = [how, 7, 7] + [7] * 57 + JOINT, [how, 9, 10] + [9, 10] * 30 + JOINT
    plan = find_shift([*system, *old, *newer, 4], [*system, *newer, 11, 12], JOINT)
    assert plan is not None
    assert (plan.head, plan.dropped, plan.kept) == (len(system), len(old), len(newer))


def test_no_shift_where_the_prompt_lost_anything_but_whole_exchanges() -> None:
    system, old, newer = [1, 2, 3], [7] * 60 + JOINT, [9, 10] * 30 + JOINT + [9] * 20
    # A prompt that shares only a message header with the state (a question asked again after !reset).
    assert find_shift(system + old + newer, [*system, *[9, 10] * 30, 11], JOINT) is None
    # A few tokens missing inside an answer (tidied text): left to the prefix match.
    assert find_shift(system + old + newer, system + old[:10] + old[14:] + newer, JOINT) is None
    assert find_shift(system + old, system + old + [11, 12], JOINT) is None  # a plain prefix: nothing to drop
    assert find_shift(system + old + newer, system + newer, []) is None  # a template whose turns do not split


# ---------------------------------------------------------------- the real model

ALICE, BOB = 0x0A0A0A0A, 0x0B0B0B0B
# A short history bound and reply cap: the bound is passed by the 4th turn, as with the defaults (1,024 tokens,
# 384-token answers), in a fraction of the time.
CFG = Config.model_validate({"memory": {"max_history_tokens": 240}, "model": {"max_tokens_cap": 72}})
# ChatML's tokens between an answer and a question's text, and after the question: "<|im_end|>", "\n",
# "<|im_start|>", "user", "\n" ... "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n", with room to spare.
TEMPLATE_TOKENS = 14
# The bundled model answers the first in markdown (bold list items), which the answer's tidying removes.
QUESTIONS = (
    "Tell me in detail how to plan a long hike.",
    "What should I pack?",
    "How much water do I need?",
    "How do I find water on the way?",
    "How do I treat blisters?",
    "What if the weather turns bad?",
)


class Written:
    """The bundled model, keeping the pieces it wrote, before the answer's tidying."""

    def __init__(self, model) -> None:
        self.model, self.name, self.deterministic = model, model.name, True
        self.pieces: list[str] = []

    def stream(self, request, stats):
        for piece in self.model.stream(request, stats):
            self.pieces.append(piece)
            yield piece

    def run(self, job):
        return job()


def question(text: str, sender: int, packet_id: int) -> Query:
    msg = Inbound(sender, 1, packet_id, "TEXT_MESSAGE_APP", text, len(text.encode()), is_dm=True, pki=True)
    return Query(msg, Accept(Kind.ASK, text, sender, 0, True), 0.0, query_id=packet_id)


def answer(
    model, memory: ConversationMemory, query: Query, max_tokens: int = 72, *, promise: bool = False
) -> tuple[GenerationStats, int]:
    """Answer as the worker does (history from memory, whole answer read); the stats and the history's length.

    `promise`: the request says, as the worker's does, what history the next prompt will carry.
    """
    return answered(Written(model), memory, query, max_tokens, promise=promise)[0:2]


def answered(
    model: Written, memory: ConversationMemory, query: Query, max_tokens: int = 72, *, promise: bool = False
) -> tuple[GenerationStats, int, AnswerStream]:
    """`answer`, with the answer as sent (tidied, filtered, fragmented) and what memory keeps of it: its text."""
    context = memory.gather(query, Context())
    request = build_generation(query.decision.question, CFG, 200, CFG.mesh.max_fragments, context.history)
    request = dataclasses.replace(request, seed=7, conversation=query.conversation_name, max_tokens=max_tokens)
    if promise:
        request = dataclasses.replace(request, next_history=context.follow_up)
    stream = AnswerStream(model, request, 200, CFG.mesh.max_fragments)
    list(stream)  # every fragment, and past the fragment cap the text kept for "more": memory keeps it all
    memory.answered(query, query.decision.question, stream.text)
    return stream.stats, len(context.history) // 2, stream


@pytest.mark.model
def test_the_sixth_turn_past_the_history_bound_evaluates_only_its_own_question(bundled_model) -> None:
    memory = ConversationMemory(MemoryTable(Store(":memory:")), CFG, bundled_model.count_tokens)
    turns: list[tuple[GenerationStats, int]] = []
    for n, text in enumerate(QUESTIONS, 1):
        turns.append(answer(bundled_model, memory, question(text, ALICE, n)))
        # Someone else's question in between: the engine's live state never holds the conversation.
        answer(bundled_model, memory, question(f"What is {n} plus {n}?", BOB + n, 100 + n), max_tokens=4)
    sixth, held = turns[-1]
    assert held < 5  # the history passed its bound: memory left the oldest exchanges out
    cold, _ = answer(bundled_model, memory, question(QUESTIONS[-1], BOB, 200), max_tokens=4)
    # Past the bound the saved state was shifted, not re-read (which turn passes it depends on the answers' lengths).
    assert any(stats.extra["kv_shifted_out"] > 0 for stats, _ in turns[3:])
    for stats, _ in turns[3:]:
        # llama.cpp's own count of the tokens it evaluated before the first one sampled: the question and its
        # template tokens, as a cold question evaluates after the system prompt; not the history (hundreds).
        assert stats.extra["kv_restored"] == 1.0
        assert stats.extra["prompt_evaluated"] <= cold.extra["prompt_evaluated"] + 8
    assert sixth.extra["prompt_evaluated"] < sixth.prompt_tokens / 10


@pytest.mark.model
def test_past_the_bound_the_state_is_shifted_after_the_answer_and_the_next_question_restores_it_whole(
    bundled_model,
) -> None:
    # As the worker asks: each request carries the history its follow-up will have. The oldest exchange then
    # leaves the saved state while the answer is paced on air, and the next question finds a state holding its
    # whole prompt but its own words: no shift on its path (no K-shift, no attention over removed cells).
    memory = ConversationMemory(MemoryTable(Store(":memory:")), CFG, bundled_model.count_tokens)
    turns: list[tuple[GenerationStats, int]] = []
    for n, text in enumerate(QUESTIONS, 1):
        turns.append(answer(bundled_model, memory, question(text, ALICE, n), promise=True))
        answer(bundled_model, memory, question(f"What is {n} plus {n}?", BOB + n, 100 + n), max_tokens=4)
    assert turns[-1][1] < 5  # the history passed its bound
    assert any(stats.extra["kv_settled_out"] > 0 for stats, _ in turns[2:])
    for text, (stats, _) in zip(QUESTIONS[1:], turns[1:], strict=True):
        assert stats.extra["kv_restored"] == 1.0 and stats.extra["kv_shifted_out"] == 0.0
        # llama.cpp's own count: the question and the template's tokens around it (a few), not the history.
        own = bundled_model.count_tokens(text) + TEMPLATE_TOKENS
        assert stats.extra["prompt_evaluated"] <= own
        assert stats.extra["cached_tokens"] >= stats.prompt_tokens - own


@pytest.mark.model
def test_after_an_answer_cut_at_the_cap_and_tidied_the_follow_up_evaluates_only_its_own_question(
    bundled_model,
) -> None:
    memory = ConversationMemory(MemoryTable(Store(":memory:")), CFG, bundled_model.count_tokens)
    model = Written(bundled_model)
    first, _, sent = answered(model, memory, question(QUESTIONS[0], ALICE, 1))
    # What memory keeps, and the follow-up's history holds, is not what the model wrote: its markdown is gone, and
    # the answer stopped at the token cap.
    assert sent.text != "".join(model.pieces).strip()
    assert first.extra["finish_length"] == 1.0
    answer(bundled_model, memory, question("What is 2 plus 2?", BOB, 101), max_tokens=4)  # someone else's
    follow_up, held, _ = answered(model, memory, question(QUESTIONS[1], ALICE, 2))
    cold, _ = answer(bundled_model, memory, question(QUESTIONS[1], BOB, 200), max_tokens=4)
    assert held == 1 and follow_up.extra["kv_restored"] == 1.0
    # The first question and its whole answer came from the saved state; the follow-up evaluated its question and
    # template tokens, as a cold question does after the system prompt (not the tidied answer again).
    assert follow_up.extra["cached_tokens"] >= first.prompt_tokens + first.completion_tokens - 8
    assert follow_up.extra["prompt_evaluated"] <= cold.extra["prompt_evaluated"] + 8
