"""Note files split into passages: along headings and paragraphs, never inside a character or grapheme."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshbot.core.passages import split_passages
from meshbot.core.text import graphemes, utf8_len

NOTE = """# Willow Creek

Intro line.

## Repeater

On Heron Hill.

Solar powered.

## Net

Tuesdays at 19:30.
### Net control
Dario.
"""


def test_each_heading_starts_a_passage_titled_with_file_and_headings() -> None:
    passages = split_passages(NOTE, "wc.md", max_bytes=600)
    titles = [p.title for p in passages]
    assert titles == [
        "wc.md > Willow Creek",
        "wc.md > Willow Creek > Repeater",
        "wc.md > Willow Creek > Net",
        "wc.md > Net > Net control",
    ]
    assert passages[1].text == "On Heron Hill.\n\nSolar powered."
    assert passages[3].text == "Dario."


def test_a_long_section_is_cut_at_paragraphs_first() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 20 for i in range(6)]
    text = "# Long\n\n" + "\n\n".join(p.strip() for p in paragraphs)
    passages = split_passages(text, "long.md", max_bytes=300)
    assert len(passages) > 1
    assert all(utf8_len(p.text) <= 300 for p in passages)
    # no paragraph is split: each passage starts with "Paragraph"
    assert all(p.text.startswith("Paragraph") for p in passages)


def test_a_file_without_headings_is_one_titled_by_its_name() -> None:
    passages = split_passages("Just a line of text.\n", "plain.txt")
    assert [(p.title, p.text) for p in passages] == [("plain.txt", "Just a line of text.")]


def test_empty_sections_make_no_passage() -> None:
    assert split_passages("# A\n\n# B\n\n   \n", "x.md") == []


def _boundaries(text: str) -> set[int]:
    return {m.start() for m in graphemes(text)} | {len(text)}


# Text rich in what breaks naive cutting: combining marks, ZWJ emoji, flags, CJK, spaces and headings.
_PIECES = st.sampled_from(
    [
        "a",
        "é",
        "e\u0301",
        " ",
        "\n",
        "\n\n",
        "\r\n",
        "\r",
        "# ",
        "## T\n",
        ". ",
        "字",
        "👍🏽",
        "👨\u200d👩\u200d👧",
        "🇩🇪",
        "\u0301",
        "x" * 30,
    ]
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=80), max_bytes=st.integers(8, 120))
def test_no_passage_starts_or_ends_inside_a_grapheme_and_each_fits(pieces: list[str], max_bytes: int) -> None:
    text = "".join(pieces)
    bounds = _boundaries(text)
    for passage in split_passages(text, "f.md", max_bytes):
        assert passage.text == text[passage.start : passage.end]
        assert passage.start in bounds and passage.end in bounds, passage
        passage.text.encode("utf-8")  # whole characters: always encodable
        # a passage may exceed the limit only when it is a single grapheme cluster
        if utf8_len(passage.text) > max_bytes:
            assert len(list(graphemes(passage.text))) == 1
        assert passage.title.startswith("f.md")


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(_PIECES.filter(lambda p: "#" not in p), max_size=80), max_bytes=st.integers(8, 120))
def test_no_text_is_lost_between_passages(pieces: list[str], max_bytes: int) -> None:
    text = "".join(pieces)
    kept = "".join(p.text for p in split_passages(text, "f.md", max_bytes))
    assert "".join(kept.split()) == "".join(text.split())
