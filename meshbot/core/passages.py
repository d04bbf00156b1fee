"""Split an operator's note file into passages along headings and paragraphs. Pure.

A passage is a slice of the file (its `start` and `end` are offsets into the text), so it never
begins or ends inside a character; cuts are also never inside a grapheme cluster (an accented
letter, an emoji with its modifiers), because a passage that is too long is cut at a paragraph,
then a sentence, then a word, and only as a last resort between two grapheme clusters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import regex

from meshbot.core.text import utf8_len

# ATX headings ("## Net schedule"); the closing hashes some writers add are not part of the title.
_HEADING = re.compile(r"^[ \t]{0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?。！？][\"')\]]*\s+")
_SPACE = re.compile(r"\s+")
_CLUSTER = regex.compile(r"\X")
# Between the parts of a title: file, then its heading path.
TITLE_SEPARATOR = " > "


@dataclass(frozen=True)
class Passage:
    """A piece of a note file: `text` is `source[start:end]`; `title` names the file and its headings."""

    title: str
    text: str
    start: int
    end: int


def _sections(source: str) -> Iterator[tuple[tuple[str, ...], int, int]]:
    """(heading path, start, end) of each stretch of text under one heading."""
    path: list[tuple[int, str]] = []
    start = 0
    for match in _HEADING.finditer(source):
        yield tuple(title for _, title in path), start, match.start()
        level = len(match.group(1))
        path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2).strip())]
        start = match.end()
    yield tuple(title for _, title in path), start, len(source)


class _Splitter:
    """Cuts in one source text, each moved to a grapheme-cluster boundary."""

    def __init__(self, source: str, max_bytes: int) -> None:
        self.source = source
        self.max_bytes = max_bytes

    def boundary_from(self, i: int) -> int:
        """The first grapheme-cluster boundary at or after offset `i`."""
        if i <= 0 or i >= len(self.source):
            return max(0, min(i, len(self.source)))
        before, after = self.source[i - 1], self.source[i]
        # Between two ASCII characters there is always a boundary (UAX #29), except inside CR LF: the
        # common case, answered without scanning the line (which made long lines quadratic).
        if before < "\x80" and after < "\x80" and not (before == "\r" and after == "\n"):
            return i
        # Just after a line feed is always a boundary (UAX #29 GB4), so scan from there.
        anchor = self.source.rfind("\n", 0, i) + 1
        for match in _CLUSTER.finditer(self.source, anchor):
            if match.end() >= i:
                return match.start() if match.start() == i else match.end()
        return len(self.source)

    def trimmed(self, start: int, end: int) -> tuple[int, int]:
        """The span without whitespace at either end, dropping whole clusters only."""
        text = self.source
        while start < end and text[start].isspace() and self.boundary_from(start + 1) == start + 1:
            start += 1
        while end > start and text[end - 1].isspace() and self.boundary_from(end - 1) == end - 1:
            end -= 1
        return start, end

    def pieces(self, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
        """Spans of [start, end) cut after each match of `pattern` (the match stays with the left piece)."""
        spans, at = [], start
        for match in pattern.finditer(self.source, start, end):
            cut = min(self.boundary_from(match.end()), end)
            if cut > at:
                spans.append((at, cut))
                at = cut
        spans.append((at, end))
        return [span for span in (self.trimmed(*s) for s in spans) if span[0] < span[1]]

    def cluster_cuts(self, start: int, end: int) -> list[tuple[int, int]]:
        """Cut a span with no sentence or word break into pieces of whole grapheme clusters."""
        spans, piece_start, size = [], start, 0
        for match in _CLUSTER.finditer(self.source, start, end):
            cluster_bytes = utf8_len(match.group())
            if size and size + cluster_bytes > self.max_bytes:
                spans.append((piece_start, match.start()))
                piece_start, size = match.start(), 0
            size += cluster_bytes
        spans.append((piece_start, end))
        return spans

    def fit(self, start: int, end: int, level: int = 0) -> list[tuple[int, int]]:
        """Spans covering [start, end), each at most max_bytes, cut at the coarsest break that works."""
        if utf8_len(self.source[start:end]) <= self.max_bytes:
            return [(start, end)]
        if level == len(_FINER):
            return self.cluster_cuts(start, end)
        out: list[tuple[int, int]] = []
        for piece in self.pieces(start, end, _FINER[level]):
            out += self.fit(*piece, level + 1)
        return self.merge(out)

    def merge(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Join neighbouring spans while the joined text still fits: passages of useful length."""
        merged: list[tuple[int, int]] = []
        for span in spans:
            if merged and utf8_len(self.source[merged[-1][0] : span[1]]) <= self.max_bytes:
                merged[-1] = (merged[-1][0], span[1])
            else:
                merged.append(span)
        return merged


_FINER = (_BLANK_LINE, _SENTENCE_END, _SPACE)


def split_passages(source: str, name: str, max_bytes: int = 600) -> list[Passage]:
    """Passages of a note file called `name`: one per heading's text, long ones cut to `max_bytes`."""
    if max_bytes < 8:
        raise ValueError("max_bytes must leave room for at least one grapheme cluster")
    splitter = _Splitter(source, max_bytes)
    passages = []
    for headings, start, end in _sections(source):
        title = TITLE_SEPARATOR.join((name, *headings[-2:]))  # the file and the nearest two headings
        span = splitter.trimmed(start, end)
        if span[0] == span[1]:
            continue
        for piece_start, piece_end in splitter.fit(*span):
            piece_start, piece_end = splitter.trimmed(piece_start, piece_end)
            if piece_start < piece_end:
                passages.append(Passage(title, source[piece_start:piece_end], piece_start, piece_end))
    return passages
