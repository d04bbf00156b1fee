"""The fragmenter: what a mesh user receives when the answer is longer than one packet."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meshbot.core.fragmenter import (
    CUT_OFF,
    MORE_HINT,
    Fragment,
    FragmentPlan,
    StreamFragmenter,
    cut_off_ending,
    fragment,
    is_final_text,
    looks_like_meshbot_output,
    strip_numbering,
)
from meshbot.core.text import graphemes, utf8_len

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CYRILLIC = "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГД"
EMOJI = [
    "😀",
    "👍🏽",  # skin tone
    "👨\u200d👩\u200d👧\u200d👦",  # ZWJ family, 25 bytes
    "👩🏿\u200d🔬",
    "🏳️\u200d🌈",
    "🇺🇦",  # flag: a regional-indicator pair
    "🇩",  # a lone regional indicator: pairs shift after it
    "1️⃣",  # keycap
    "❤️",
    "👨\u200d",  # a dangling ZWJ that the next piece may continue
]
WHITESPACE = [" ", "  ", "\n", "\t", "\r\n", "\u3000", "\u00a0", "\u2028", " \u0301", "\u0600 "]
PUNCTUATION = [".", "!", "?", "…", "。", "！", "？", ",", "\u201d.", ". ", "。」"]


def _combining(n_min: int, n_max: int) -> st.SearchStrategy[str]:
    marks = st.text(st.characters(min_codepoint=0x300, max_codepoint=0x36F), min_size=n_min, max_size=n_max)
    return st.tuples(st.sampled_from("aeoxиж"), marks).map("".join)


PIECE = st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
    st.text(CYRILLIC, min_size=1, max_size=10),
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF), min_size=1, max_size=8),
    st.sampled_from(EMOJI),
    st.sampled_from(WHITESPACE),
    st.sampled_from(PUNCTUATION),
    _combining(1, 4),
    _combining(10, 120),  # zalgo: sometimes bigger than the room
    st.text(max_size=4),  # anything at all
)
# Mostly long enough for several fragments and the cap; short texts and raw Unicode too.
TEXT = st.one_of(
    st.lists(PIECE, min_size=30, max_size=150).map("".join),
    st.lists(PIECE, max_size=30).map("".join),
    st.text(max_size=300),
)
BUDGET = st.integers(min_value=60, max_value=232)
MAX_FRAGMENTS = st.integers(min_value=1, max_value=12)
START_INDEX = st.one_of(st.just(1), st.integers(min_value=1, max_value=15))


def _no_space(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace())


def _cut_positions(text: str, bodies: list[str]) -> list[int]:
    """Where each body starts and ends in the original, skipping the whitespace dropped at cuts."""
    cuts, pos = [], 0
    for body in bodies:
        start = pos
        while not text.startswith(body, start):
            assert text[start].isspace(), f"body {body!r} is not next in the text at {pos}"
            start += 1
        cuts += [start, start + len(body)]
        pos = start + len(body)
    return cuts


def _assert_grapheme_cuts(text: str, plan: FragmentPlan, budget: int, last_index: int) -> None:
    boundaries = {m.start() for m in graphemes(text)} | {len(text)}
    smallest_room = budget - len(f"{last_index}/{last_index} ") - utf8_len(MORE_HINT)
    for cut in _cut_positions(text, [f.body for f in plan.fragments]):
        if cut in boundaries:
            continue
        cluster = next(m.group() for m in graphemes(text) if m.start() < cut < m.end())
        assert utf8_len(cluster) > smallest_room, f"cut inside a {utf8_len(cluster)}-byte cluster"


def _assert_numbering(plan: FragmentPlan, max_fragments: int, start_index: int) -> None:
    frags = plan.fragments
    assert len(frags) <= max_fragments
    assert [f.index for f in frags] == list(range(start_index, start_index + len(frags)))
    for f in frags[:-1]:
        assert f.text == f"{f.index}/+ {f.body}"
        assert not f.final and not f.capped
    if not frags:
        return
    last = frags[-1]
    if plan.remainder:
        assert last.capped and not last.final and len(frags) == max_fragments
        assert last.text == f"{last.index}/+ {last.body}{MORE_HINT}"
    elif start_index == 1 and len(frags) == 1:
        assert last.final and not last.capped and last.text == last.body
    else:
        assert last.final and not last.capped
        assert last.text == f"{last.index}/{last.index} {last.body}"
    assert [f.capped for f in frags].count(True) <= 1
    assert sum(f.text.endswith(MORE_HINT) for f in frags) == int(bool(plan.remainder))


def _check_plan(text: str, plan: FragmentPlan, budget: int, max_fragments: int, start_index: int) -> None:
    for f in plan.fragments:
        assert f.nbytes <= budget
        f.text.encode("utf-8")  # raises on a lone surrogate
        assert f.body, "an empty fragment wastes a packet"
    _assert_numbering(plan, max_fragments, start_index)
    sent = "".join(f.body for f in plan.fragments)
    assert _no_space(sent + plan.remainder) == _no_space(text)
    _assert_grapheme_cuts(text, plan, budget, start_index + max_fragments - 1)


def _stream(text: str, splits: list[int], budget: int, max_fragments: int, start_index: int) -> FragmentPlan:
    stream = StreamFragmenter(budget, max_fragments, start_index)
    out: list[Fragment] = []
    edges = [0, *sorted(splits), len(text)]
    for a, b in zip(edges, edges[1:], strict=False):
        out += stream.feed(text[a:b])
    out += stream.finish()
    return FragmentPlan(tuple(out), stream.remainder)


# --- properties -------------------------------------------------------------------------------------


@PROPERTY
@given(text=TEXT, budget=BUDGET, max_fragments=MAX_FRAGMENTS, start_index=START_INDEX)
@example(text="x" * 50 + " abcd", budget=60, max_fragments=5, start_index=10)
@example(text="x" * 50 + " abcd \n", budget=60, max_fragments=5, start_index=10)
@example(text="a" + "\u0301" * 150, budget=60, max_fragments=3, start_index=1)
def test_fragments_fit_keep_text_and_graphemes(text: str, budget: int, max_fragments: int, start_index: int) -> None:
    plan = fragment(text, budget, max_fragments, start_index)
    _check_plan(text, plan, budget, max_fragments, start_index)


@PROPERTY
@given(data=st.data(), text=TEXT, budget=BUDGET, max_fragments=MAX_FRAGMENTS, start_index=START_INDEX)
def test_any_chunking_streams_the_same_fragments(
    data: st.DataObject, text: str, budget: int, max_fragments: int, start_index: int
) -> None:
    splits = data.draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=60))
    assert _stream(text, splits, budget, max_fragments, start_index) == fragment(
        text, budget, max_fragments, start_index
    )


@PROPERTY
@given(data=st.data(), text=TEXT, budget=BUDGET)
def test_each_fragment_leaves_exactly_once(data: st.DataObject, text: str, budget: int) -> None:
    """Token by token, a fragment never appears twice or changes after it was handed out."""
    splits = data.draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=60))
    plan = _stream(text, splits, budget, 20, 1)
    assert len({f.index for f in plan.fragments}) == len(plan.fragments)


WORD = st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10),
    st.text(CYRILLIC, min_size=1, max_size=8),
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF), min_size=1, max_size=6),
    st.sampled_from(EMOJI[:6]),
)


@PROPERTY
@given(data=st.data(), words=st.lists(WORD, min_size=1, max_size=150), budget=BUDGET)
def test_long_answer_starts_leaving_before_the_model_finishes(
    data: st.DataObject, words: list[str], budget: int
) -> None:
    text = " ".join(words) + "."
    if utf8_len(text) <= budget + 40:
        return
    splits = data.draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=60))
    stream = StreamFragmenter(budget, 5)
    edges = [0, *sorted(splits), len(text)]
    early = [f for a, b in zip(edges, edges[1:], strict=False) for f in stream.feed(text[a:b])]
    assert early and early[0].index == 1 and early[0].text.startswith("1/+ ")


@PROPERTY
@given(text=TEXT, budget=BUDGET, start_index=START_INDEX)
def test_more_continuation_resumes_where_the_cap_stopped(text: str, budget: int, start_index: int) -> None:
    first = fragment(text, budget, 2, start_index)
    nxt = start_index + len(first.fragments)
    more = fragment(first.remainder, budget, 20, nxt)
    bodies = "".join(f.body for f in first.fragments + more.fragments)
    assert _no_space(bodies + more.remainder) == _no_space(text)
    indices = [f.index for f in first.fragments + more.fragments]
    assert indices == list(range(start_index, start_index + len(indices)))


@PROPERTY
@given(text=TEXT)
def test_decoration_is_removed(text: str) -> None:
    for f in fragment(text, 80, 6, 1).fragments:
        assert strip_numbering(f.text) == f.body


@PROPERTY
@given(
    words=st.lists(WORD, min_size=1, max_size=200),
    budget=BUDGET,
    max_fragments=MAX_FRAGMENTS,
    start_index=START_INDEX,
)
def test_every_continued_fragment_is_recognised_and_no_final_one(
    words: list[str], budget: int, max_fragments: int, start_index: int
) -> None:
    """Another meshbot's "k/+" fragments are told from a person's text; its last fragment is not refused."""
    plan = fragment(" ".join(words), budget, max_fragments, start_index)
    for f in plan.fragments:
        assert looks_like_meshbot_output(f.text, budget) == (not f.final), f.text


@PROPERTY
@given(
    text=TEXT,
    budget=BUDGET,
    max_fragments=MAX_FRAGMENTS,
    start_index=START_INDEX,
    rewritable=st.booleans(),
    tag=st.sampled_from(["", "🤖 ", "[AI] "]),
)
def test_an_answer_cut_off_after_any_fragment_ends_within_budget(
    text: str, budget: int, max_fragments: int, start_index: int, rewritable: bool, tag: str
) -> None:
    """After a crash, whichever fragment was stored last, the cut-off ending fits, keeps the tag and reads as the end."""
    for f in fragment(text, budget, max_fragments, start_index, tag=tag).fragments:
        assert is_final_text(f.index, f.text, tag) == f.final
        if f.final:
            continue
        index, ended = cut_off_ending(f.index, f.text, budget, rewritable, tag)
        assert utf8_len(ended) <= budget and ended.endswith(CUT_OFF) and is_final_text(index, ended, tag)
        assert ended.startswith(tag)
        if index == f.index:
            assert rewritable and strip_numbering(ended, tag) == f"{f.body} {CUT_OFF}"
        else:
            assert index == f.index + 1 and ended == f"{tag}{index}/{index} {CUT_OFF}"


# --- examples ---------------------------------------------------------------------------------------

RUSSIAN = (
    "Меш-сеть передаёт короткие сообщения от узла к узлу без интернета. Каждый узел повторяет пакет, "
    "поэтому сообщение уходит дальше, чем дальность одного радио. Скорость низкая, и длинный ответ "
    "приходится делить на части. Бот отвечает коротко и по делу, чтобы не занимать эфир. Если ответ не "
    "помещается, он просит написать «ещё», и присылает продолжение. Так все в сети слышат друг друга."
)
CHINESE = (
    "网状网络可以在没有互联网的情况下把短消息从一个节点传到另一个节点。每个节点都会转发数据包，所以消息"
    "能传得比单个电台更远。速率很低，较长的回答必须分成几段发送。机器人的回答要简短，尽量少占用信道。"
    "如果回答放不下，它会请你回复“更多”，然后发送后面的内容。这样网络里的每个人都能听到彼此。"
)
ENGLISH = (
    "A mesh network passes short messages from node to node without the internet. Every node repeats a "
    "packet, so a message travels further than one radio could reach. The rate is low, and a long answer "
    "has to be split into parts. The bot keeps its answers short and to the point so that it does not hog "
    "the air. If an answer does not fit, it asks you to reply with more and sends the rest. That way "
    "everyone on the mesh can still hear each other, even on a busy evening with many nodes in range."
)
EMOJI_TEXT = (
    "Family day 👨\u200d👩\u200d👧\u200d👦 at the park 🌳🌞! We had 🍕🍕 and 🍦, then played ⚽ with the "
    "kids 👧🏽👦🏿. Flags 🇺🇦🇵🇱🇩🇪 everywhere 🎉. Science club 👩🏿\u200d🔬👨🏻\u200d🔬 showed a 🚀 "
    "launch 🔥🔥🔥. Pride 🏳️\u200d🌈 parade later 💃🕺. Great weather ☀️, no rain 🌧️ at all 👍🏽👍🏽👍🏽 "
    "and everyone went home happy 😀😀 with a big 🎈 each ❤️❤️."
)


def _mean_fill(text: str, budget: int = 200) -> float:
    frags = fragment(text, budget, 20).fragments
    non_final = [f.nbytes / budget for f in frags if not f.final]
    assert non_final, "sample too short to measure"
    return sum(non_final) / len(non_final)


@pytest.mark.parametrize("sample", [ENGLISH * 3, RUSSIAN * 3, CHINESE * 3, EMOJI_TEXT * 3])
def test_non_final_fragments_are_well_filled(sample: str) -> None:
    assert _mean_fill(sample) >= 0.90


@pytest.mark.parametrize("sample", [RUSSIAN, CHINESE, EMOJI_TEXT, "👨\u200d👩\u200d👧\u200d👦" * 24])
def test_600_byte_answers_in_wide_scripts_never_overflow(sample: str) -> None:
    text = sample
    while utf8_len(text) < 600:
        text += " " + sample
    plan = fragment(text, 200, 10)
    assert len(plan.fragments) >= 3
    assert all(f.nbytes <= 200 for f in plan.fragments)
    assert all(f.body[-1] != "\u200d" for f in plan.fragments)  # a family is never torn apart
    _check_plan(text, plan, 200, 10, 1)


def test_short_answer_is_one_unnumbered_packet() -> None:
    plan = fragment("  The capital of France is Paris.\n", 200, 3)
    assert [f.text for f in plan.fragments] == ["The capital of France is Paris."]
    assert plan.fragments[0].final and plan.remainder == ""


def test_answer_of_exactly_the_budget_is_not_split() -> None:
    text = "Sentence one is here. " * 8 + "x" * 24  # 200 bytes with a sentence end near the end
    assert utf8_len(text) == 200
    assert [f.text for f in fragment(text, 200, 3).fragments] == [text]


def test_long_answer_is_numbered_and_final_says_so() -> None:
    texts = [f.text for f in fragment(ENGLISH, 200, 5).fragments]
    assert texts[0].startswith("1/+ ") and texts[1].startswith("2/+ ")
    assert texts[-1].startswith(f"{len(texts)}/{len(texts)} ")


def test_cap_sends_hint_and_keeps_the_rest_for_more() -> None:
    plan = fragment(ENGLISH * 2, 200, 2)
    first, second = plan.fragments
    assert second.capped and second.text.endswith(MORE_HINT) and second.nbytes <= 200
    assert plan.remainder and not plan.remainder[0].isspace()
    more = fragment(plan.remainder, 200, 3, start_index=3)
    assert more.fragments[0].text.startswith("3/+ ")


def test_more_continuation_is_numbered_even_when_short() -> None:
    plan = fragment("And that is all.", 200, 3, start_index=4)
    assert [f.text for f in plan.fragments] == ["4/4 And that is all."]


def test_prefers_a_sentence_end_near_full() -> None:
    text = "word " * 34 + "end. " + "more words follow here until we overflow the packet. " * 2
    first = fragment(text, 200, 5).fragments[0]
    assert first.body.endswith("end.")


def test_chinese_cuts_at_full_stop_without_spaces() -> None:
    first = fragment(CHINESE * 2, 200, 5).fragments[0]
    assert first.body.endswith("。")


def test_prefix_that_grows_at_ten_still_fits() -> None:
    """'10/10 ' is a byte longer than '10/+ ': a tail that only fits the latter is split again."""
    plan = fragment("x" * 50 + " abcd", 60, 5, start_index=10)
    assert [f.text for f in plan.fragments] == ["10/+ " + "x" * 50, "11/11 abcd"]


def test_oversize_cluster_is_cut_between_code_points() -> None:
    zalgo = "a" + "\u0301" * 200  # one 401-byte grapheme cluster
    plan = fragment(zalgo, 200, 5)
    assert all(f.nbytes <= 200 for f in plan.fragments)
    assert "".join(f.body for f in plan.fragments) == zalgo


def test_emoji_completed_by_a_later_token_is_not_split() -> None:
    stream = StreamFragmenter(60, 5)
    pieces = ["ok " * 18, "👨", "\u200d", "👩", "\u200d👧", " tail " * 10]
    frags = [f for p in pieces for f in stream.feed(p)] + stream.finish()
    assert "👨\u200d👩\u200d👧" in "".join(f.body for f in frags)


def test_first_fragment_leaves_as_soon_as_a_packet_is_full() -> None:
    stream = StreamFragmenter(200, 5)
    fed = ""
    for i in range(0, len(ENGLISH), 4):  # model tokens are a few characters
        fed += ENGLISH[i : i + 4]
        if stream.feed(ENGLISH[i : i + 4]):
            break
    assert utf8_len(fed) <= 200 + 12


@pytest.mark.parametrize("blank", ["", "   ", "\n\t \u3000\r\n"])
def test_blank_answer_sends_nothing(blank: str) -> None:
    stream = StreamFragmenter(200, 3)
    assert stream.feed(blank) == [] and stream.finish() == []
    assert fragment(blank, 200, 3) == FragmentPlan((), "")


def test_state_for_more_after_finish() -> None:
    stream = StreamFragmenter(200, 2)
    stream.feed(ENGLISH * 2)
    stream.finish()
    assert stream.capped and stream.next_index == 3 and stream.remainder


@pytest.mark.parametrize(
    ("budget", "max_fragments", "start_index"), [(20, 3, 1), (60, 0, 1), (200, 3, 0), (25, 100, 1)]
)
def test_unusable_arguments_are_refused(budget: int, max_fragments: int, start_index: int) -> None:
    with pytest.raises(ValueError):
        StreamFragmenter(budget, max_fragments, start_index)


@pytest.mark.parametrize(
    "text",
    [
        "1/2 what is lora and",
        "2/2 …and why does it reach so far?",
        "(1/2) how do I set the region?",
        "[2/2] and the modem preset?",
        "3/3 the end",
        "2/5 someone else's scheme",
        "1/2 cup of flour",
        "1/+ a short note",  # "+" as the total, but far from a full fragment
        "2/2 " + "and one more thing about antennas, " * 5,  # a long final part is still a person's
        "who is 🤖?",  # the tag inside a question
        "",
    ],
)
def test_a_persons_own_numbering_is_not_taken_for_a_bot(text: str) -> None:
    assert not looks_like_meshbot_output(text, 200, tag="🤖")


def test_meshbots_own_marks_are_recognised() -> None:
    first, second, third = fragment(ENGLISH * 2, 200, 3).fragments
    assert looks_like_meshbot_output(first.text, 200) and looks_like_meshbot_output(second.text, 200)
    assert third.capped and looks_like_meshbot_output(third.text, 200)
    assert looks_like_meshbot_output('4/+ short [reply "more"]', 200)  # numbering and hint together
    assert looks_like_meshbot_output("🤖 LoRa is a radio.", 200, tag="🤖")
    assert looks_like_meshbot_output("2/2 🤖 and that is all.", 200, tag="🤖")
    assert not looks_like_meshbot_output("🤖 LoRa is a radio.", 200)  # no tag configured: just text


def test_numbering_and_hint_are_removed() -> None:
    assert strip_numbering('2/+ rest [reply "more"]') == "rest"
    assert strip_numbering("3/3 the end") == "the end"
    assert strip_numbering("plain text") == "plain text"


def test_a_list_number_or_initialism_is_not_taken_for_a_sentence_end() -> None:
    # Without the rule the first fragment would end "...as follows: 1." and the item come later.
    intro = "The steps to set up a node are short and they go as follows, in the order given here: "
    text = intro + "word " * 14 + "1. Flash it. 2. Pair it, e.g. by Bluetooth. 3. Set the region."
    first = fragment(text, 200, 5).fragments[0]
    assert not first.body.endswith(("1.", "2.", "e.g."))
    assert first.nbytes <= 200
