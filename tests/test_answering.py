"""The one entry point for answers (service/answering.py) with a fake model: paths, checks, leaks, the reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbot.core.config import Config, load_config
from meshbot.core.domain import Note
from meshbot.core.fragmenter import strip_numbering
from meshbot.core.leaks import KINDS, LeakFilter, clean, filtered
from meshbot.service.answering import Answerer, Asked, answer_mode, fragment_budget
from meshbot.service.knowledge import knowledge_now
from meshbot.service.reference import Reference, open_reference
from tests.fakes import FakeModel

NET = Note("wc.md > Willow Creek mesh: local notes > Net", "The weekly net is on Tuesday at 10:00 on channel 2.")


def grounded(**over: object) -> Config:
    return load_config(overrides={"answers.mode": "grounded", **over}, environ={})


def on_air(answer) -> str:
    return " ".join(strip_numbering(f.text, "🤖 ") for f in answer)


def test_auto_mode_is_grounded_below_a_billion_parameters_or_when_unknown() -> None:
    cfg = load_config(environ={})
    small, big, unknown = FakeModel(), FakeModel(), FakeModel()
    small.n_params, unknown.n_params = 134_515_008, None
    assert answer_mode(cfg.answers, small) == "grounded"
    assert answer_mode(cfg.answers, big) == "open"
    assert answer_mode(cfg.answers, unknown) == "grounded"
    told = load_config(overrides={"answers.model_params": 8e9}, environ={})
    assert answer_mode(told.answers, unknown) == "open"  # a server's model, sized in the config
    assert answer_mode(grounded().answers, big) == "grounded"


def test_one_rule_for_the_fragment_budget() -> None:
    cfg = load_config(environ={})
    assert fragment_budget(cfg, dm=True) <= fragment_budget(cfg, dm=False) <= 200
    small = load_config(overrides={"mesh.max_fragment_bytes": 80}, environ={})
    assert fragment_budget(small, dm=True) == fragment_budget(small, dm=False) == 80


def test_grounded_with_nothing_found_declines_in_one_fragment_without_asking_the_model() -> None:
    model = FakeModel().queue("The weekly net is at 12pm.")
    answer = Answerer(grounded(), model).stream(Asked("When is the weekly net?", notes=()), 200, 3)
    frags = list(answer)
    assert len(frags) == 1 and answer.path == "declined" and not model.requests
    assert "don't know" in frags[0].text and "12pm" not in frags[0].text
    es = Answerer(grounded(), model).stream(Asked("¿Cuándo es la red semanal?", notes=()), 200, 3)
    assert "No lo sé" in on_air(es)


def test_grounded_answer_that_keeps_the_facts_goes_out_as_written() -> None:
    model = FakeModel().queue("It is on Tuesday at 10:00.")
    answer = Answerer(grounded(), model).stream(Asked("When is the weekly net?", notes=(NET,)), 200, 3)
    assert on_air(answer) == "It is on Tuesday at 10:00." and answer.path == "grounded"
    assert "10:00" in model.requests[0].turns[-1].content  # the note reached the prompt


def test_a_changed_fact_sends_the_notes_own_sentence_instead() -> None:
    model = FakeModel().queue("The weekly net starts at 10:30.")
    answer = Answerer(grounded(), model).stream(Asked("When is the weekly net?", notes=(NET,)), 200, 3)
    text = on_air(answer)
    assert answer.path == "extractive" and "10:30" not in text
    assert text == "Willow Creek mesh: The weekly net is on Tuesday at 10:00 on channel 2."
    assert answer.model_text == "The weekly net starts at 10:30."
    assert answer.text == text  # memory keeps what was sent


def test_small_talk_goes_to_the_model_in_grounded_mode() -> None:
    model = FakeModel().queue("Hello! Ask me about first aid or the mesh.")
    answer = Answerer(grounded(), model).stream(Asked("hello", notes=()), 200, 3)
    assert on_air(answer) == "Hello! Ask me about first aid or the mesh." and answer.path == "open"
    assert model.requests[0].turns[-1].content == "hello"


def test_open_mode_lets_the_model_answer_but_not_leak() -> None:
    model = FakeModel().queue('The answer is "LoRa" - a long range radio. Question: what is the range?')
    cfg = load_config(overrides={"answers.mode": "open"}, environ={})
    answer = Answerer(cfg, model).stream(Asked("What radio does Meshtastic use?", notes=()), 200, 3)
    assert on_air(answer) == "LoRa - a long range radio." and answer.path == "open"
    assert answer.leaks.found == ["answer-is", "question-label"]


def test_the_prompt_has_no_labels_a_small_model_could_copy() -> None:
    model = FakeModel().queue("It is on Tuesday at 10:00.")
    list(Answerer(grounded(), model).stream(Asked("When is the weekly net?", notes=(NET,)), 200, 3))
    prompt = "\n".join(t.content for t in model.requests[0].turns)
    for label in ("Question:", "local notes", "Local notes", "End of"):
        assert label not in prompt


@pytest.mark.parametrize(
    ("said", "kind"),
    [
        ("The answer is 3.", "answer-is"),
        ("What is the default hop limit? It is 3.", "echo"),
        ("It is 3. Question: what is the maximum?", "question-label"),
        ("The local notes say it is 3.", "notes-talk"),
        ("It is 3. I answer in three short sentences at most.", "budget-talk"),
    ],
)
def test_each_kind_of_prompt_leak_is_kept_off_the_air(said: str, kind: str) -> None:
    text, found = clean(said, "What is the default hop limit?")
    assert kind in found and kind in KINDS
    assert "3" in text or kind == "notes-talk"
    for leak in ("The answer is", "Question:", "local notes", "short sentences", "default hop limit?"):
        assert leak not in text


def test_the_leak_filter_gives_the_same_text_however_the_stream_is_cut() -> None:
    said = "The answer is 3. " + "It relays each message it hears " * 6 + "once. Question: and the maximum?"
    whole = clean(said, "What is the hop limit?")[0]
    for size in (1, 3, 7, 50):
        leak_filter = LeakFilter("What is the hop limit?")
        pieces = [said[i : i + size] for i in range(0, len(said), size)]
        assert "".join(filtered(pieces, leak_filter)).strip() == whole


def reference_folder(tmp_path: Path) -> Path:
    for lang, text in {
        "en": "# Bleeding\n\nFor heavy bleeding, press firmly on the wound for 10 minutes.\n",
        "es": "# Hemorragia\n\nPara una hemorragia fuerte, presiona firmemente la herida durante 10 minutos.\n",
    }.items():
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "bleeding.md").write_text(text, encoding="utf-8")
    return tmp_path


def test_the_reference_answers_in_the_language_asked_and_falls_back_to_english(tmp_path: Path) -> None:
    reference = Reference(reference_folder(tmp_path))
    try:
        assert reference.languages == ("en", "es")
        assert "presiona" in reference.search("¿Cómo paro una hemorragia fuerte?", 3)[0].note.text
        assert "press firmly" in reference.search("How do I stop heavy bleeding?", 3)[0].note.text
        assert reference.language_of("Wie stoppe ich eine starke Blutung?") == "en"  # no German folder
        # Portuguese has no folder: Spanish is nearer than English, and the search folds its accents.
        assert reference.language_of("Como paro uma hemorragia forte?") == "es"
    finally:
        reference.close()


def test_a_portuguese_question_gets_the_spanish_reference_and_a_portuguese_or_russian_i_dont_know() -> None:
    cfg = load_config(environ={})
    reference = open_reference(cfg.answers, cfg.knowledge.passage_bytes)
    assert reference is not None
    try:
        hits = reference.search("Qual é o número de emergência na Europa?", 3)
        assert hits and "112" in hits[0].note.text and "Europa" in hits[0].note.title
    finally:
        reference.close()
    model = FakeModel()
    pt = Answerer(grounded(), model).stream(Asked("Quem cuida da antena do morro?", notes=()), 200, 3)
    assert on_air(pt).startswith("Não sei") and pt.path == "declined"
    ru = Answerer(grounded(), model).stream(Asked("Кто обслуживает ретранслятор?", notes=()), 200, 3)
    assert on_air(ru).startswith("Не знаю") and not model.requests


def test_a_one_word_question_finds_only_a_passage_whose_heading_names_it() -> None:
    cfg = load_config(environ={})
    reference = open_reference(cfg.answers, cfg.knowledge.passage_bytes)
    assert reference is not None
    try:
        # The shipped lightning note says "a handheld radio does not attract lightning": not what a radio is.
        assert reference.search("What is a radio?", 5) == []
        assert "bleeding" in reference.search("Bleeding?", 5)[0].note.title.lower()
    finally:
        reference.close()


def test_the_reference_is_on_by_default_beside_the_notes_and_can_be_off_or_replaced(tmp_path: Path) -> None:
    cfg = load_config(environ={})
    source = knowledge_now(cfg.knowledge, cfg.answers)
    assert source is not None and source.reference is not None
    try:
        notes = source.notes_for("How do I stop heavy bleeding?")
        assert notes and "bleeding" in notes[0].title.lower()
    finally:
        source.close()
    off = load_config(overrides={"answers.reference": False}, environ={})
    assert knowledge_now(off.knowledge, off.answers) is None
    mine = load_config(overrides={"answers.reference_path": str(reference_folder(tmp_path))}, environ={})
    replaced = knowledge_now(mine.knowledge, mine.answers)
    assert replaced is not None
    try:
        assert replaced.notes_for("How do I stop heavy bleeding?")[0].text.endswith("10 minutes.")
    finally:
        replaced.close()


def test_the_operators_notes_win_over_the_reference(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "kit.md").write_text("# Bleeding kit\n\nThe bleeding kit is in the old school.\n", encoding="utf-8")
    cfg = load_config(overrides={"knowledge.paths": [str(notes)]}, environ={})
    source = knowledge_now(cfg.knowledge, cfg.answers)
    assert source is not None
    try:
        found = source.notes_for("Where is the bleeding kit for heavy bleeding?")
        assert [note.title for note in found] == ["kit.md > Bleeding kit"]  # the local answer, undiluted
        assert "kit.md" not in source.notes_for("How do I stop heavy bleeding?")[0].title  # the reference
    finally:
        source.close()
