"""Text helpers for the mesh: byte length, grapheme clusters, and tidying model output. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import regex

# Extended grapheme clusters (UAX #29) as the `regex` module knows them.
_GRAPHEME = regex.compile(r"\X")

# Line breaks other than "\n" (CRLF, CR, NEL, VT, FF, LINE/PARAGRAPH SEPARATOR) all become "\n".
_LINE_BREAKS = regex.compile(r"\r\n|[\r\x85\x0b\x0c\u2028\u2029]")
# Control characters except "\n", and lone surrogates (they cannot be encoded as UTF-8).
_CONTROLS = regex.compile(r"[^\P{Cc}\n]|\p{Cs}")

# Markdown, one construct per pattern. Line-anchored ones run before the inline ones.
_FENCE = regex.compile(r"^[ \t]*(?:```|~~~).*(?:\n|$)", regex.M)
_RULE = regex.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", regex.M)
_HEADER = regex.compile(r"^[ \t]*#{1,6}[ \t]+", regex.M)
_QUOTE = regex.compile(r"^[ \t]*>[ \t]?", regex.M)
_BULLET = regex.compile(r"^[ \t]*[-*+•][ \t]+", regex.M)
_LINK = regex.compile(r"!?\[([^\]\n]+)\]\(([^)\s]+)\)")
_INLINE_CODE = regex.compile(r"(`+)([^`\n]+?)\1")
_BOLD = regex.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_STRIKE = regex.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
# Single-character emphasis only when it hugs a word, so `2*3*4` and snake_case survive.
_ITALIC_STAR = regex.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_ITALIC_UNDERSCORE = regex.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")

_HORIZONTAL_SPACE = regex.compile(r"[^\S\n]+")
_SPACE_AROUND_NEWLINE = regex.compile(r" ?\n ?")
_BLANK_LINES = regex.compile(r"\n{2,}")


def utf8_len(text: str) -> int:
    """Bytes `text` takes on air as UTF-8."""
    return len(text.encode("utf-8"))


def graphemes(text: str) -> Iterator[regex.Match[str]]:
    """Iterate the extended grapheme clusters of `text` as match objects (span and text)."""
    return _GRAPHEME.finditer(text)


def is_space_cluster(cluster: str) -> bool:
    """True when a grapheme cluster is whitespace only (dropping it never orphans a mark)."""
    return cluster.isspace()


def strip_space_clusters(text: str) -> str:
    """Strip whitespace at both ends, whole grapheme clusters only."""
    clusters = [m.group() for m in graphemes(text)]
    start, end = 0, len(clusters)
    while start < end and is_space_cluster(clusters[start]):
        start += 1
    while end > start and is_space_cluster(clusters[end - 1]):
        end -= 1
    return "".join(clusters[start:end])


def _strip_markdown(text: str) -> str:
    text = _FENCE.sub("", text)
    text = _RULE.sub("", text)
    return _strip_inline(_strip_line_marks(text))


def _strip_line_marks(text: str) -> str:
    return _BULLET.sub("", _QUOTE.sub("", _HEADER.sub("", text)))


def _strip_inline(text: str) -> str:
    text = _LINK.sub(r"\1 (\2)", text)
    text = _INLINE_CODE.sub(r"\2", text)
    text = _BOLD.sub(r"\2", text)
    text = _STRIKE.sub(r"\1", text)
    text = _ITALIC_STAR.sub(r"\1", text)
    return _ITALIC_UNDERSCORE.sub(r"\1", text)


def tidy(text: str) -> str:
    """Make model output mesh-friendly: no control chars or markdown, single spaces and newlines, stripped."""
    text = _LINE_BREAKS.sub("\n", text)
    text = text.replace("\t", " ")
    text = _CONTROLS.sub("", text)
    text = _strip_markdown(text)
    text = _HORIZONTAL_SPACE.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    text = _BLANK_LINES.sub("\n", text)
    return text.strip()


# A word end followed by whitespace: where, if no inline markup is open there, the line so
# far can be tidied without waiting for the rest of it.
# Released at word ends, not sentence ends: a sentence that straddles a fragment's end would
# otherwise hold the whole fragment back until the model finished that sentence.
_WORD_BREAK = regex.compile(r"\S\s+")
# What could still open inline markup once more text arrives, as `tidy`'s patterns see it.
_OPENERS = regex.compile(r"\*\*(?=\S)|__(?=\S)|~~(?=\S)|(?<![\w*])\*(?=[^\s*])|(?<![\w_])_(?=[^\s_])|`|\[")
# A line is not settled until it has a word: "- - -" may still become a rule, "#" a header.
_WORDY = regex.compile(r"[^\W_]")
# Every character `tidy` turns into a line break.
_LINE_BREAK = regex.compile(r"[\n\r\x85\x0b\x0c\u2028\u2029]")


def _balanced(line: str) -> bool:
    """True when no inline markup is left open in `line` (its bullet, quote or header mark aside)."""
    # What `tidy` pairs up is settled; an opener left over may still pair with later text.
    return _OPENERS.search(_strip_inline(_strip_line_marks(line))) is None


# The unfinished last word of a line is plain when it holds no character that markdown (as
# `tidy` sees it) could still turn into markup: then the whole line can go out at once. This
# matters for scripts without spaces between words (Chinese, Japanese), whose lines would
# otherwise wait for their line break, and for every fragment's last word.
_PLAIN_TAIL = regex.compile(r"(?:\A|\s)[^\s*_`~\[\]!#>]+\Z")


def _release_point(line: str) -> int:
    """How much of an unfinished line can be tidied now; 0 if none of it."""
    if _PLAIN_TAIL.search(line) and _balanced(line) and _WORDY.search(line):
        return len(line)
    return _word_cut(line)


def _word_cut(line: str) -> int:
    """End of the last word of `line` after which no inline markup is open; 0 if none."""
    ends = [m.end() for m in _WORD_BREAK.finditer(line)]
    for end in reversed(ends):  # the latest balanced point is almost always the last one
        if _balanced(line[:end]) and _WORDY.search(line, 0, end):
            return end
    return 0


class StreamTidier:
    """Tidies streamed model text, releasing it as soon as no markup can still change it.

    Every markdown construct `tidy` removes lies within one line, so each line is tidied
    on its own. Within a line, the text up to its end (when the last word is plain) or up
    to a word end with no markup open is tidied again from the line's start: what it adds
    to the previous release goes out.
    """

    def __init__(self) -> None:
        self._line = ""  # raw text of the line being written
        self._sent = 0  # characters of the line's tidied text already released
        self._newline = False  # a line break is due before the next released text
        self._started = False

    def feed(self, piece: str) -> list[str]:
        """Take a piece of model output; return tidied text that is now settled."""
        out: list[str] = []
        self._line += piece
        while (brk := _LINE_BREAK.search(self._line)) is not None:
            out += self._release(self._line[: brk.start()])
            self._line, self._sent, self._newline = self._line[brk.end() :], 0, True
        cut = _release_point(self._line)
        if cut:
            out += self._release(self._line[:cut])
        return out

    def finish(self) -> list[str]:
        """Release whatever is left at the end of the answer."""
        out = self._release(self._line)
        self._line, self._sent = "", 0
        return out

    def _release(self, raw: str) -> list[str]:
        text = tidy(raw)
        new = text[self._sent :]
        if not new:
            return []
        self._sent = len(text)
        if self._newline and self._started:
            new = "\n" + new
        self._newline, self._started = False, True
        return [new]


def tidy_stream(pieces: Iterable[str]) -> Iterator[str]:
    """Tidy streamed model text, releasing it as soon as it is settled."""
    tidier = StreamTidier()
    for piece in pieces:
        yield from tidier.feed(piece)
    yield from tidier.finish()
