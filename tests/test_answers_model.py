"""Grounded answers with the real bundled model (SmolLM2-135M): facts kept, unknowns declined, no leaks."""

from __future__ import annotations

import pytest

from meshbot.core.config import Config, load_config
from meshbot.core.domain import ChatTurn, Note
from meshbot.core.fragmenter import strip_numbering
from meshbot.service.answering import Answerer, AnswerStream, Asked
from meshbot.service.knowledge import knowledge_now

pytestmark = pytest.mark.model

# What must never go on air (issue 18): prompt framing a small model copies.
LEAKS = ("The answer is", "Question:", "local notes", "Local notes", "short sentence", "no markdown")

NOTES = [
    ("When is the weekly net?", Note("wc.md > Willow Creek: notes > Net", "The weekly net is every Tuesday at 10:00 on channel 2."), ("tuesday", "10:00")),
    ("Who looks after the repeater?", Note("wc.md > Willow Creek: notes > Repeater", "The repeater on Heron Hill is looked after by Marta Quist."), ("marta",)),
    ("What is the gate code of the shelter?", Note("wc.md > Willow Creek: notes > Shelter", "The gate code of the storm shelter is 7319."), ("7319",)),
    ("How long do I boil creek water?", Note("wc.md > Willow Creek: notes > Water", "Boil creek water for 3 minutes at a rolling boil before drinking."), ("3 minutes",)),
]  # fmt: skip


def cfg() -> Config:
    return load_config(overrides={"model.seed": 42}, environ={})


def ask(
    model, question: str, notes: tuple[Note, ...] | None, history: tuple[ChatTurn, ...] = ()
) -> tuple[AnswerStream, str]:
    answer = Answerer(cfg(), model).stream(Asked(question, history, notes=notes, seed=42), 200, 3)
    text = " ".join(strip_numbering(f.text, "🤖 ") for f in answer)
    return answer, text


def test_the_bundled_model_is_grounded_by_default(bundled_model) -> None:
    assert bundled_model.n_params is not None and bundled_model.n_params < 1e9
    assert Answerer(cfg(), bundled_model).mode == "grounded"


def test_grounded_answers_carry_the_notes_facts(bundled_model) -> None:
    for question, note, facts in NOTES:
        answer, text = ask(bundled_model, question, (note,))
        assert answer.path in ("grounded", "extractive"), question
        for fact in facts:
            assert fact in text.lower(), (question, text, answer.model_text)


def test_a_changed_fact_falls_back_to_the_notes_own_sentence(bundled_model) -> None:
    # An earlier wrong answer in the conversation: the model repeats it ("10:32 on channel 5") over the note.
    note = Note("wc.md > Willow Creek: notes > Net", "The weekly net is every Tuesday at 10:00 on channel 2.")
    history = (ChatTurn("user", "When is the net?"), ChatTurn("assistant", "At 10:30 on Thursday, on channel 5."))
    answer, text = ask(bundled_model, "When is the net again?", (note,), history)
    assert answer.path == "extractive", answer.text
    assert answer.model_text and ("10:00" not in answer.model_text or "channel 2" not in answer.model_text)
    assert text == "Willow Creek: The weekly net is every Tuesday at 10:00 on channel 2."


@pytest.mark.parametrize(
    "question", ["When is the weekly net?", "Which channel is our emergency channel?", "Who runs the weekly net?"]
)
def test_unknown_local_questions_are_declined(bundled_model, question: str) -> None:
    c = cfg()
    source = knowledge_now(c.knowledge, c.answers)  # the defaults: the shipped reference, no operator notes
    assert source is not None
    try:
        notes = source.notes_for(question)
    finally:
        source.close()
    answer, text = ask(bundled_model, question, notes)
    assert answer.path == "declined" and "don't know" in text
    assert not any(ch.isdigit() for ch in text)  # no invented time or channel


@pytest.mark.parametrize(
    "question",
    [
        "What is LoRa?",
        "Wie viele Bytes passen in eine Meshtastic-Textnachricht?",
        "How many hops can a message take?",
        "hello, who are you?",
    ],
)
def test_no_prompt_framing_goes_on_air(bundled_model, question: str) -> None:
    c = cfg()
    source = knowledge_now(c.knowledge, c.answers)
    assert source is not None
    try:
        notes = source.notes_for(question)
    finally:
        source.close()
    for mode in ("grounded", "open"):
        over = load_config(overrides={"model.seed": 42, "answers.mode": mode}, environ={})
        answer = Answerer(over, bundled_model).stream(Asked(question, notes=notes, seed=42), 200, 3)
        text = " ".join(strip_numbering(f.text, "🤖 ") for f in answer)
        assert text.strip(), (mode, question)
        for leak in LEAKS:
            assert leak not in text, (mode, question, text)
        assert not text.lower().startswith(question.lower()), (mode, text)  # no echoed question
