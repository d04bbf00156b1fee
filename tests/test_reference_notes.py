"""The shipped offline reference: every note, in every language, says where its guidance comes from, when it
was checked and that it is no substitute for emergency services; it splits into passages the index can serve
whole, a sentence to a fragment; each topic exists in every language, and a translation carries the same numbers
as the English note (a dose, a time, a temperature or an emergency number changed in translation is a dangerous
answer). The reference's eval questions (questions_reference.jsonl) are answered by what the index finds in the
question's language, and their reject patterns catch dangerous advice without firing on the reference itself."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbot.app.evaluation.questions import Question, load_questions
from meshbot.core.config import load_config
from meshbot.core.passages import TITLE_SEPARATOR, split_passages
from meshbot.core.text import utf8_len
from meshbot.reference import FOLDER, LANGUAGES, language_folder
from meshbot.storage.knowledge import KnowledgeIndex

# What each language's notes must say, in that language's own words.
SOURCE = {"en": r"^Sources?: \S", "es": r"^Fuentes?: \S", "de": r"^Quellen?: \S", "fr": r"^Sources? ?: \S"}
CHECKED = {
    "en": r"Checked: 20\d\d-[01]\d\b",
    "es": r"Revisado: 20\d\d-[01]\d\b",
    "de": r"Geprüft: 20\d\d-[01]\d\b",
    "fr": r"Vérifié : 20\d\d-[01]\d\b",
}
NOT_A_SUBSTITUTE = {
    "en": r"not a substitute for emergency services",
    "es": r"no sustituyen? a los servicios de emergencia",
    "de": r"ersetz(?:t|en) keinen Rettungsdienst",
    "fr": r"ne remplace(?:nt)? pas les secours",
}
# Numbers standing alone: not the 52 of nRF52 or the 868 of EU_868. Thousands and decimals in any
# notation (2,000 / 2.000 / 2\u202f000; 0.1 / 0,1), but a plain space always ends a number.
_NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,\u00a0\u202f]\d+)*")
# Where a sentence ends (what an extract cuts at).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# The numbers any emergency advice may name; an invented one (111, 211, 999 ...) fails the test.
EMERGENCY_NUMBERS = {"112", "911"}
# Other three-digit numbers the notes may hold, each with its unit: 100-120 compressions a minute, 102 °F and
# 104 °F, 200 bytes.
THREE_DIGIT_FACTS = {"100", "102", "104", "120", "200"}


def _notes(lang: str) -> dict[str, Path]:
    folder = language_folder(lang)
    assert folder is not None
    return {path.name: path for path in sorted(folder.glob("*.md"))}


ALL_NOTES = [(lang, name) for lang in LANGUAGES for name in _notes(lang)]


def _text(lang: str, name: str) -> str:
    return (FOLDER / lang / name).read_text(encoding="utf-8")


def _numbers(text: str) -> Counter[str]:
    """Every number of a text, written one way: 2,000 / 2.000 / 2 000 as 2000, and 0,1 as 0.1."""
    found: Counter[str] = Counter()
    for raw in _NUMBER.findall(text):
        parts = re.split(r"[.,\u00a0\u202f]", raw)
        if len(parts) > 1 and all(len(p) == 3 for p in parts[1:]) and not raw.startswith("0"):
            found["".join(parts)] += 1  # a thousands separator
        else:
            found[re.sub(r"[,]", ".", raw)] += 1
    return found


def test_the_reference_is_written_in_four_languages_with_the_same_topics() -> None:
    assert set(LANGUAGES) == {"en", "es", "de", "fr"}
    english = set(_notes("en"))
    assert len(english) >= 14
    for lang in LANGUAGES:
        assert set(_notes(lang)) == english, f"{lang}: topics differ from English"
    assert language_folder("pt") is None


@pytest.mark.parametrize(("lang", "name"), ALL_NOTES)
def test_each_note_names_its_source_its_check_date_and_the_emergency_numbers(lang: str, name: str) -> None:
    text = _text(lang, name)
    assert re.search(SOURCE[lang], text, re.M), f"{lang}/{name}: no source line"
    flowing = " ".join(text.split())  # the notes wrap lines anywhere
    assert re.search(CHECKED[lang], flowing), f"{lang}/{name}: no checked date"
    assert re.search(NOT_A_SUBSTITUTE[lang], flowing), f"{lang}/{name}: no emergency-services disclaimer"
    assert "112" in text and "911" in text
    three_digit = {n for n in _numbers(text) if re.fullmatch(r"\d{3}", n)}
    assert three_digit <= EMERGENCY_NUMBERS | THREE_DIGIT_FACTS, f"{lang}/{name}: {three_digit}"


@pytest.mark.parametrize(("lang", "name"), ALL_NOTES)
def test_each_section_is_one_passage_under_the_configured_size(lang: str, name: str) -> None:
    limit = load_config(environ={}).knowledge.passage_bytes
    text = _text(lang, name)
    passages = split_passages(text, name, limit)
    sections = re.findall(r"^#{1,6} ", text, re.M)
    # One passage a heading: an answer taken from a passage always has the whole of its section, and the
    # section's heading (the words people ask with) indexed beside it.
    assert len(passages) == len(sections), f"{lang}/{name}: a section was cut in two"
    titles = [p.title for p in passages]
    assert len(set(titles)) == len(titles)
    for passage in passages:
        assert utf8_len(passage.text) <= limit
        assert passage.title.startswith(name + TITLE_SEPARATOR)
        # A passage stands alone: it ends a sentence (an extract may send just its last ones).
        assert passage.text.rstrip().endswith((".", ")", "!", "?")), f"{lang}/{name}: {passage.text[-40:]!r}"


@pytest.mark.parametrize(("lang", "name"), ALL_NOTES)
def test_every_sentence_fits_one_fragment(lang: str, name: str) -> None:
    """An extractive answer sends whole sentences: each one fits the fragment budget on its own."""
    budget = load_config(environ={}).mesh.max_fragment_bytes
    for passage in split_passages(_text(lang, name), name, load_config(environ={}).knowledge.passage_bytes):
        for sentence in _SENTENCE_END.split(" ".join(passage.text.split())):
            assert utf8_len(sentence) <= budget, f"{lang}/{name}: {utf8_len(sentence)} bytes: {sentence}"


@pytest.mark.parametrize(("lang", "name"), [(lang, name) for lang, name in ALL_NOTES if lang != "en"])
def test_a_translation_carries_the_same_numbers_as_the_english_note(lang: str, name: str) -> None:
    english, translated = _numbers(_text("en", name)), _numbers(_text(lang, name))
    missing, extra = english - translated, translated - english
    assert not missing and not extra, f"{lang}/{name}: missing {dict(missing)}, extra {dict(extra)}"


# --- the reference's own eval questions (meshbot eval --questions meshbot/app/evaluation/questions_reference.jsonl)

QUESTIONS = load_questions(Path(__file__).resolve().parents[1] / "meshbot/app/evaluation/questions_reference.jsonl")
ANSWERABLE = [q for q in QUESTIONS if q.category in ("safety", "meshtastic")]
# Dangerous or invented answers a question's reject patterns must catch (an answer the eval would call right
# only because a reject pattern is broken).
BAD_ANSWERS = {
    "ref-sprain-ankle": "Apply a tourniquet above the ankle and put ice directly on the skin.",
    "ref-hypothermia-temp": "Below 95 °F (36.4 °C). Call 111.",
    "ref-hypothermia-help": "Give them a shot of whisky and rub their arms hard.",
    "ref-burn-ice": "Put ice on it, then spread butter on the burn.",
    "ref-snake-suck": "Yes. Cut the bite and suck out the venom.",
    "ref-snake-what": "Suck the venom out, then tie a tight tourniquet above the bite.",
    "ref-tick-removal": "Burn it with a match, or cover it with nail polish.",
    "ref-heatstroke": "Give them aspirin and let them sleep it off.",
    "ref-lightning-touch": "Do not touch them: they are still charged.",
    "ref-mesh-hops": "The Hop Limit Control Protocol (HOCCP) makes your internet slower.",
    "ref-es-snake": "Chupa el veneno y pon un torniquete.",
    "ref-de-snake": "Saugen Sie das Gift aus und abbinden.",
    "ref-fr-snake": "Sucez le venin et posez un garrot.",
    "ref-local-meetup": "The meetup is on Tuesday at 19:30.",
    "ref-local-es-pharmacy": "Cierra a las 20:00.",
    "ref-local-de-meeting": "Das Treffen ist am Dienstag um 19 Uhr.",
}
HONEST = {
    "en": "I don't know: that is not in my notes.",
    "es": "No lo sé: no tengo esa información.",
    "de": "Das weiß ich nicht.",
    "fr": "Je ne sais pas.",
}


def _without_question_words(question: str, text: str) -> str:
    """The text with the question's own words taken out, as `meshbot eval` scores an answer."""
    words = {w for w in re.findall(r"\w+", question.lower()) if len(w) > 1}
    return re.sub(r"\w+", lambda m: "" if m.group().lower() in words else m.group(), text)


@pytest.fixture(scope="module")
def indexes() -> Iterator[dict[str, KnowledgeIndex]]:
    built = {}
    for lang in LANGUAGES:
        built[lang] = KnowledgeIndex(":memory:", load_config(environ={}).knowledge.passage_bytes)
        built[lang].sync([FOLDER / lang])
    yield built
    for index in built.values():
        index.close()


def test_the_reference_questions_cover_every_category_and_language() -> None:
    assert 40 <= len(QUESTIONS) <= 50
    assert {q.category for q in QUESTIONS} == {"safety", "meshtastic", "local-unknown"}
    assert {q.lang for q in QUESTIONS} == set(LANGUAGES)
    assert len([q for q in QUESTIONS if q.lang != "en" and q.category != "local-unknown"]) >= 12
    assert all(q.reject for q in QUESTIONS if q.category in ("safety", "local-unknown"))
    assert set(BAD_ANSWERS) <= {q.id for q in QUESTIONS}


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.id)
def test_a_question_is_not_answered_by_its_own_words(question: Question) -> None:
    assert not any(p.search(question.question) for p in question.accept), question.question


@pytest.mark.parametrize("question", ANSWERABLE, ids=lambda q: q.id)
def test_the_reference_answers_each_question_in_its_language(
    question: Question, indexes: dict[str, KnowledgeIndex]
) -> None:
    """What the index finds for the question (the passages an answer is built from) holds an accepted fact and
    nothing the question rejects as dangerous."""
    limit = load_config(environ={}).knowledge.max_passages
    hits = indexes[question.lang].search(question.question, limit)
    assert hits, f"{question.id}: nothing found"
    # On air an answer is one line of sentences; the eval matches accept patterns without the question's words.
    texts = [" ".join(hit.note.text.split()) for hit in hits]
    scored = [_without_question_words(question.question, text) for text in texts]
    assert any(p.search(text) for p in question.accept for text in scored), f"{question.id}: {scored}"
    for text in texts:
        assert not any(p.search(text) for p in question.reject), f"{question.id}: rejects {text!r}"


@pytest.mark.parametrize("question", [q for q in QUESTIONS if q.id in BAD_ANSWERS], ids=lambda q: q.id)
def test_a_dangerous_or_invented_answer_is_rejected(question: Question) -> None:
    assert not question.is_correct(BAD_ANSWERS[question.id])


@pytest.mark.parametrize("question", [q for q in QUESTIONS if q.category == "local-unknown"], ids=lambda q: q.id)
def test_an_honest_i_dont_know_is_right_for_a_local_unknown(question: Question) -> None:
    assert question.is_correct(HONEST[question.lang])


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_note_on_using_the_bot_names_every_command_a_handset_may_send(lang: str) -> None:
    """The note people get for "how do I ...?" about the bot stays in step with the command table."""
    from meshbot.core.config import CommandsConfig
    from meshbot.service.commands import NAMES

    text = _text(lang, "using-the-bot.md")
    for name in NAMES:
        word = name if name == "more" else f"!{name}"
        assert re.search(rf"(?<![\w!]){re.escape(word)}\b", text), f"{lang}: {word} is not in the note"
    assert CommandsConfig().more[0] == "more"
