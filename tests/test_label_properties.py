"""Properties: the AI tag plus numbering always fit the budget; markdown stripping never grows the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshbot.core.fragmenter import MORE_HINT, StreamFragmenter, fragment, labelled, strip_numbering
from meshbot.core.text import tidy, utf8_len

TAGS = st.sampled_from(["🤖 ", "[AI] ", "", "🤖", "AI: ", "🧑‍💻 "])
ANSWERS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=1500)


@settings(max_examples=300, deadline=None)
@given(answer=ANSWERS, tag=TAGS, budget=st.integers(60, 232), count=st.integers(1, 12), start=st.integers(1, 5))
def test_tag_and_numbering_always_fit_the_budget(answer: str, tag: str, budget: int, count: int, start: int) -> None:
    plan = fragment(answer, budget, count, start, tag=tag)
    for frag in plan.fragments:
        assert utf8_len(frag.text) <= budget, frag
        assert frag.text.startswith(tag)
        assert strip_numbering(frag.text, tag) == frag.body


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(ANSWERS, max_size=8), tag=TAGS, budget=st.integers(60, 232))
def test_streamed_tagged_fragments_fit_too(pieces: list[str], tag: str, budget: int) -> None:
    stream = StreamFragmenter(budget, 3, tag=tag)
    out = [f for piece in pieces for f in stream.feed(piece)] + stream.finish()
    assert all(utf8_len(f.text) <= budget and f.text.startswith(tag) for f in out)
    assert all(f.text.endswith(MORE_HINT) for f in out if f.capped)


@given(text=ANSWERS, tag=TAGS, budget=st.integers(20, 232))
def test_a_labelled_one_packet_reply_fits(text: str, tag: str, budget: int) -> None:
    out = labelled(text, tag, budget)
    assert utf8_len(out) <= budget and out.startswith(tag)


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=400))
def test_markdown_stripping_never_grows_the_text(text: str) -> None:
    out = tidy(text)
    assert len(out) <= len(text)
    assert utf8_len(out) <= utf8_len(text)


_WORD = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéüßøçЖжя0123456789'"), min_size=1, max_size=12
)
_PUNCT = st.sampled_from(["", "", "", ",", ".", "?", "!", ";", ":"])
PROSE = st.lists(st.tuples(_WORD, _PUNCT), min_size=1, max_size=40).map(lambda ws: " ".join(w + p for w, p in ws))


@settings(max_examples=500, deadline=None)
@given(text=PROSE)
def test_plain_prose_is_left_unchanged(text: str) -> None:
    assert tidy(text) == text
