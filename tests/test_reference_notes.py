"""The shipped offline reference: every note, in every language, says where its guidance comes from, when it
was checked and that it is no substitute for emergency services; it splits into passages the index can serve
whole; each topic exists in every language, and a translation carries the same numbers as the English note
(a dose, a time, a temperature or an emergency number changed in translation is a dangerous answer)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from meshbot.core.config import load_config
from meshbot.core.passages import TITLE_SEPARATOR, split_passages
from meshbot.core.text import utf8_len
from meshbot.reference import FOLDER, LANGUAGES, language_folder

# What each language's notes must say, in that language's own words.
SOURCE = {"en": r"^Sources?: \S", "es": r"^Fuentes?: \S", "de": r"^Quellen?: \S", "fr": r"^Sources? ?: \S"}
CHECKED = {
    "en": r"Checked: 2026-12\b",
    "es": r"Revisado: 2026-12\b",
    "de": r"Geprüft: 2026-12\b",
    "fr": "Vérifié : 2026-12",
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


@pytest.mark.parametrize(("lang", "name"), [(lang, name) for lang, name in ALL_NOTES if lang != "en"])
def test_a_translation_carries_the_same_numbers_as_the_english_note(lang: str, name: str) -> None:
    english, translated = _numbers(_text("en", name)), _numbers(_text(lang, name))
    missing, extra = english - translated, translated - english
    assert not missing and not extra, f"{lang}/{name}: missing {dict(missing)}, extra {dict(extra)}"
