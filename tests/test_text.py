"""tidy(): model output made fit for a mesh packet."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from meshbot.core.text import strip_space_clusters, tidy, utf8_len

PLAIN = st.lists(
    st.one_of(
        st.sampled_from("abcxyzабвж你好😀.,!?'\"()0123456789"),
        st.sampled_from([" ", "  ", "\t", "\n", "\n\n\n", "\r\n", "\x00", "\x07", "\x1b", "\u3000"]),
    ),
    max_size=200,
).map("".join)


def test_markdown_goes_words_stay() -> None:
    raw = (
        "## Answer\n\n"
        "**Paris** is the *capital* of __France__.\n"
        "- It has ~~no~~ the `Eiffel` tower\n"
        "* Population: about 2 million\n"
        "> quoted line\n"
        "```python\nprint(1)\n```\n"
        "See [the map](https://example.org/map)."
    )
    assert tidy(raw) == (
        "Answer\n"
        "Paris is the capital of France.\n"
        "It has no the Eiffel tower\n"
        "Population: about 2 million\n"
        "quoted line\n"
        "print(1)\n"
        "See the map (https://example.org/map)."
    )


def test_arithmetic_and_identifiers_survive() -> None:
    assert tidy("2*3*4 = 24 and my_var_name stays") == "2*3*4 = 24 and my_var_name stays"


def test_spaces_and_blank_lines_collapse() -> None:
    assert tidy("  one \t  two\n\n\n   three  \r\n\r\nfour\x00\x1b ") == "one two\nthree\nfour"


def test_emoji_sequences_survive() -> None:
    family = "👨\u200d👩\u200d👧"
    assert tidy(f"Hi {family} 👍🏽") == f"Hi {family} 👍🏽"


@settings(max_examples=300, deadline=None)
@given(PLAIN)
def test_tidy_output_is_clean(raw: str) -> None:
    out = tidy(raw)
    assert all(ch == "\n" or unicodedata.category(ch) != "Cc" for ch in out)
    assert "  " not in out and "\n\n" not in out and " \n" not in out and "\n " not in out
    assert out == out.strip()
    kept = [ch for ch in raw if not ch.isspace() and unicodedata.category(ch) != "Cc"]
    assert [ch for ch in out if not ch.isspace()] == kept  # no markdown here: every word survives


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_tidy_output_always_encodes(raw: str) -> None:
    out = tidy(raw)
    assert utf8_len(out) == len(out.encode("utf-8"))
    assert out == out.strip()


def test_lone_surrogates_are_dropped() -> None:
    assert tidy("a\ud800b") == "ab"


def test_strip_space_clusters_keeps_marks_on_spaces() -> None:
    assert strip_space_clusters("  a \u0301 ") == "a \u0301"
