"""Text helpers for the mesh: byte length, grapheme clusters, and tidying model output. Pure."""

from __future__ import annotations

from typing import Iterator

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
    text = _HEADER.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
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
