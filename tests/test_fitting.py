"""Fitting a chat into the context window, with a word tokenizer standing in for the model's."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from meshbot.core.domain import ChatTurn
from meshbot.core.fitting import ContextTooSmall, fit_turns


def words(text: str) -> int:
    return len(text.split())


def head(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def prompt_words(turns: Sequence[ChatTurn]) -> int:
    # Three tokens of template per turn, like "<|im_start|>role\n ... <|im_end|>".
    return sum(words(t.content) + 3 for t in turns)


def fit(turns: Sequence[ChatTurn], max_tokens: int, n_ctx: int):
    return fit_turns(turns, max_tokens, n_ctx, prompt_words, words, head)


SYSTEM = ChatTurn("system", "be brief")


def test_prompt_that_fits_is_untouched() -> None:
    turns = (SYSTEM, ChatTurn("user", "what is lora"))
    result = fit(turns, 10, 100)
    assert result.turns == turns and result.cut_tokens == 0 and result.max_tokens == 10


def test_overlong_question_keeps_system_prompt_and_its_start() -> None:
    question = " ".join(f"w{i}" for i in range(500))
    result = fit((SYSTEM, ChatTurn("user", question)), 20, 100)
    assert result.turns[0] == SYSTEM
    kept = result.turns[1].content
    assert question.startswith(kept) and kept.startswith("w0 w1 w2")
    assert result.prompt_tokens + result.max_tokens <= 100
    assert result.cut_tokens == 500 - words(kept)


def test_old_history_goes_before_the_question_is_cut() -> None:
    history = [ChatTurn("user", "old " * 30), ChatTurn("assistant", "reply " * 30)]
    question = ChatTurn("user", "the question itself")
    result = fit((SYSTEM, *history, question), 20, 60)
    assert result.turns == (SYSTEM, question)
    assert result.cut_tokens == 60


def test_huge_system_prompt_shrinks_the_reply_rather_than_failing() -> None:
    big = ChatTurn("system", "rule " * 80)
    result = fit((big, ChatTurn("user", "hi there")), 50, 100)
    assert result.turns[0] == big
    assert result.prompt_tokens + result.max_tokens <= 100 and result.max_tokens >= 1


def test_system_prompt_bigger_than_the_context_is_an_error() -> None:
    with pytest.raises(ContextTooSmall, match="n_ctx"):
        fit((ChatTurn("system", "rule " * 200), ChatTurn("user", "hi")), 10, 100)
