"""`meshbot ask`: the fragments a user would see on air, from a fake model and from the real one."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshbot.app.ask import NEWLINE_MARK, ask_budget, run_ask
from meshbot.core.config import AnswersConfig, Config, MeshConfig, ModelConfig
from meshbot.core.domain import Generation, GenerationStats
from meshbot.core.fragmenter import MORE_HINT, strip_numbering
from meshbot.core.prompting import budget_sentences
from meshbot.core.text import tidy, tidy_stream

LINE = re.compile(r"^\[(\d+)\]\s+(\d+) B  (.*)$")

LONG_ANSWER = (
    "LoRa is a long range, low power radio modulation. It trades speed for reach, so a "
    "message of a few hundred bytes can take seconds on air. Meshtastic builds a mesh on "
    "top of it: every node repeats what it hears, up to a hop limit. That is why a bot must "
    "keep its answers short and paced. Duty cycle rules in Europe cap each node at ten "
    "percent of air time per hour. A relay bot has to respect that budget too, or the "
    "firmware will refuse to send. Short answers reach more people, faster, and leave room "
    "for everyone else on the channel. This sentence is here to make the answer long enough."
)


class FakeModel:
    """Answers from a queue, streamed in small pieces like a tokenizer would."""

    name = "fake"

    def __init__(self, answers: list[str], piece_len: int = 3) -> None:
        self.answers = list(answers)
        self.piece_len = piece_len
        self.requests: list[Generation] = []

    def run(self, job):
        return job()

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        self.requests.append(request)
        answer = self.answers.pop(0)
        pieces = [answer[i : i + self.piece_len] for i in range(0, len(answer), self.piece_len)]
        stats.prompt_tokens = 42
        stats.first_token_s = 0.25
        for piece in pieces:
            stats.completion_tokens += 1
            yield piece
        stats.total_s = 2.0
        stats.extra["tokens_per_s"] = 12.5


@pytest.fixture
def cfg() -> Config:
    # These tests are about what `ask` prints and how it fragments: the model answers freely (issue 18 made the
    # default grounded with the shipped reference; grounded answers are tested in test_answering.py).
    return Config(model=ModelConfig(seed=7), answers=AnswersConfig(mode="open", reference=False))


def run(cfg: Config, answer: str, question: str = "What is LoRa?") -> tuple[int, list[tuple[int, int, str]], str]:
    out = io.StringIO()
    code = run_ask(cfg, question, out, FakeModel([answer]))
    lines = out.getvalue().splitlines()
    frags = []
    for line in lines[:-1]:
        if line.startswith("-- "):  # the notes given, the mode and path
            continue
        match = LINE.match(line)
        assert match, f"not a fragment line: {line!r}"
        frags.append((int(match[1]), int(match[2]), match[3].replace(NEWLINE_MARK, "\n")))
    return code, frags, lines[-1]


def test_long_answer_becomes_numbered_fragments_within_budget(cfg: Config) -> None:
    code, frags, summary = run(cfg, LONG_ANSWER)
    assert code == 0
    assert [index for index, _, _ in frags] == [1, 2, 3]
    for index, nbytes, text in frags:
        assert nbytes == len(text.encode("utf-8"))
        assert nbytes <= ask_budget(cfg)
        assert text.startswith(f"🤖 {index}/+ ")  # the AI tag, then the numbering
    assert frags[-1][2].endswith(MORE_HINT)  # the rest waits for "more"
    assert "3 fragment(s)" in summary and 'left for "more"' in summary


def test_summary_reports_tokens_first_token_and_rate(cfg: Config) -> None:
    _, _, summary = run(cfg, "Short answer.")
    assert summary.startswith("-- ")
    assert "42 prompt" in summary
    assert "first token 0.25 s" in summary
    assert "12.5 tokens/s" in summary
    assert "1 fragment(s)" in summary and "0 B left over" in summary


def test_short_answer_is_one_unnumbered_fragment(cfg: Config) -> None:
    code, frags, _ = run(cfg, "LoRa is a long range radio.")
    assert code == 0
    assert frags == [(1, 32, "🤖 LoRa is a long range radio.")]


def test_markdown_never_reaches_the_air(cfg: Config) -> None:
    answer = "# LoRa\n**LoRa** is *long range*. Use `meshtastic`.\n- one\n- two\n"
    _, frags, _ = run(cfg, answer)
    on_air = " ".join(text for _, _, text in frags)
    for mark in ("#", "**", "*", "`", "- "):
        assert mark not in on_air
    assert "LoRa is long range. Use meshtastic." in on_air


def test_multibyte_answer_fits_budget_and_keeps_every_character(cfg: Config) -> None:
    answer = "Сеть LoRa передаёт короткие сообщения на большие расстояния. " * 8
    roomy = cfg.model_copy(update={"mesh": MeshConfig(max_fragments=10)})
    _, frags, _ = run(roomy, answer)
    assert len(frags) > 1
    assert all(nbytes <= ask_budget(roomy) for _, nbytes, _ in frags)
    bodies = " ".join(strip_numbering(text, roomy.mesh.ai_tag) for _, _, text in frags)
    assert bodies.split() == tidy(answer).split()


def test_model_is_told_the_budget_in_words_without_a_figure(cfg: Config) -> None:
    model = FakeModel(["ok"])
    run_ask(cfg, "hi", io.StringIO(), model)
    system = model.requests[0].turns[0].content
    assert budget_sentences(3 * (ask_budget(cfg) - 4)) in system
    assert str(3 * (ask_budget(cfg) - 4)) not in system


def test_empty_answer_is_reported_as_failure(cfg: Config) -> None:
    code, frags, summary = run(cfg, "   ")
    assert code == 1 and frags == []
    assert "0 fragment(s)" in summary


def test_missing_model_file_prints_a_clear_error(cfg: Config, tmp_path) -> None:
    bad = cfg.model_copy(update={"model": ModelConfig(path=tmp_path / "none.gguf")})
    out = io.StringIO()
    assert run_ask(bad, "hi", out) == 2
    assert "none.gguf" in out.getvalue() and out.getvalue().startswith("error:")


_WORDS = st.sampled_from(
    [
        "LoRa",
        "mesh",
        "ok",
        "**bold**",
        "*it*",
        "`code`",
        "über",
        "日本",
        "2*3",
        "snake_case",
        "[link](http://x.y)",
        ".",
        "!",
        "?",
        " ",
        "  ",
        "\n",
        "\n\n",
        "- ",
        "# ",
        "\r\n",
        "![img](u)",
        "~~gone~~",
        "_it_",
        "#tag",
        "(aside)",
        "]",
        "[",
        "(",
        ")",
        "-foo",
        "~5",
        "e\u0301",
        "山でけがをしたら。",
        "**",
        "*",
        "_",
        "`",
        "~~",
        "> ",
        "---",
        "```",
        "1.",
        "`a b`",
        "*two words*",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(
    words=st.lists(_WORDS, max_size=40), cuts=st.lists(st.integers(0, 400), max_size=12), sep=st.sampled_from([" ", ""])
)
def test_tidying_a_stream_equals_tidying_the_whole_answer(words: list[str], cuts: list[int], sep: str) -> None:
    text = sep.join(words)
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert "".join(tidy_stream(pieces)) == tidy(text)


def test_tidy_stream_releases_sentences_before_the_answer_ends() -> None:
    released: list[str] = []

    def pieces() -> Iterator[str]:
        yield "First sentence. "
        yield "Sec"
        # By now the first sentence must already be out, ready to fragment, and the plain
        # start of the next word too: nothing can turn it into markup any more.
        assert "".join(released) == "First sentence. Sec"
        yield "ond one."

    for chunk in tidy_stream(pieces()):
        released.append(chunk)
    assert "".join(released) == "First sentence. Second one."


def test_tidy_stream_does_not_hold_words_until_the_sentence_ends() -> None:
    # Fragment 1 must not wait for a sentence that straddles its end to be finished.
    released: list[str] = []

    def pieces() -> Iterator[str]:
        yield "A long sentence still being "
        yield "writ"
        assert "".join(released) == "A long sentence still being writ"
        yield "ten *now"
        assert "".join(released) == "A long sentence still being written"  # "*now" may open emphasis
        yield "*."

    for chunk in tidy_stream(pieces()):
        released.append(chunk)
    assert "".join(released) == "A long sentence still being written now."  # the emphasis is gone


def test_tidy_stream_releases_a_line_without_spaces_as_it_is_written() -> None:
    # Chinese and Japanese put no spaces between words: waiting for one would hold the line.
    released: list[str] = []

    def pieces() -> Iterator[str]:
        yield "无线电网络"
        yield "是一种"
        assert "".join(released) == "无线电网络是一种"[: len("".join(released))] and released
        yield "通信方式。"

    for chunk in tidy_stream(pieces()):
        released.append(chunk)
    assert "".join(released) == "无线电网络是一种通信方式。"


def test_tidy_stream_keeps_open_emphasis_back() -> None:
    released: list[str] = []

    def pieces() -> Iterator[str]:
        yield "Use **very "
        yield "loud"
        assert "".join(released) == "Use"  # "**very" may still become bold: hold it
        yield "** words."

    for chunk in tidy_stream(pieces()):
        released.append(chunk)
    assert "".join(released) == "Use very loud words."


@pytest.mark.model
def test_real_model_answer_goes_on_air_in_budget(cfg: Config) -> None:
    small = cfg.model_copy(update={"model": ModelConfig(seed=7, n_ctx=1024, max_tokens_cap=96, threads=1)})
    out = io.StringIO()
    assert run_ask(small, "What is a radio?", out) == 0
    lines = out.getvalue().splitlines()
    frags = [LINE.match(line) for line in lines if line.startswith("[")]
    assert frags and all(frags)
    assert lines[-2] == "-- open mode, answered open"  # the path the answer took, before the figures
    assert all(int(m[2]) == len(m[3].encode()) <= ask_budget(small) for m in frags)
    assert re.search(r"first token \d+\.\d+ s, \d+\.\d tokens/s", lines[-1])
