"""Split a model's answer into fragments that each fit one Meshtastic text packet. Pure, no I/O.

Budget
    `budget` counts UTF-8 **bytes** of what goes on air, numbering and hint included (mesh-facts
    "Sizes": ASCII 1, Cyrillic 2, CJK 3, emoji 4, ZWJ sequences 8-25+).

Numbering
    The total is unknown when fragment 1 leaves (the model is still writing), so a fragment says only
    whether more follows:

    * ``"k/+ body"``: more of the answer follows in a later fragment;
    * ``"k/k body"`` (e.g. ``"3/3 "``): the final fragment, the answer is complete;
    * ``"k/+ body [reply "more"]"``: ``max_fragments`` was reached while text remains; the rest waits in
      `StreamFragmenter.remainder` until the user replies "more";
    * an answer that fits one fragment starting at index 1 carries no numbering at all;
    * a "more" continuation (``start_index > 1``) is always numbered and continues: ``4/+``, ``5/5``.

AI tag
    With a `tag` (``[mesh] ai_tag``, default ``"🤖 "``) every fragment starts with it: ``"🤖 1/+ body"``.
    Every fragment, not only the first, so a fragment heard alone still says a machine wrote it and other
    bots' loop guards can tell. Its bytes come out of the budget before numbering and text.

Cuts
    A fragment ends, in order of preference, at the last sentence end (``.!?…`` then whitespace, or CJK
    ``。！？`` with or without whitespace; not a list number like ``1.`` or an initialism like ``e.g.``) that fills at least `SENTENCE_MIN_FILL` of the room; else at the
    last whitespace that fills at least `WORD_MIN_FILL`; else at the last grapheme-cluster boundary.
    Whitespace at a cut is dropped (whole whitespace clusters only).
    The one exception to cutting between clusters: a single cluster bigger than the room (a zalgo stack
    of combining marks) is cut between code points, never inside one. Text always stays a valid str.

Streaming
    A fragment leaves only once it is settled: when the buffered text already overflows this fragment
    (so it cannot be the final one) and every boundary inside the room is known. The last cluster of
    the buffer is never trusted, because the next piece may extend it (a ZWJ, a skin tone, a mark).
    A sentence end near full is therefore taken as soon as the overflow proves more text follows, so a
    ``k/+`` is never followed by nothing, and an answer that fits one packet is never split. Because a
    decision only looks at settled text, any chunking of the same input gives the same fragments;
    `fragment` is simply the stream fed in one piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

from meshbot.core.text import graphemes, is_space_cluster, strip_space_clusters, utf8_len

MORE_HINT = ' [reply "more"]'
# Ends an answer whose generation was lost (a crash, with a backend that cannot write the same text again).
CUT_OFF = "…[cut off: ask again]"
# Take a sentence end only when it fills this much of the room; lower costs fill, higher loses sentences.
SENTENCE_MIN_FILL = 0.85
# Below this fill a word boundary wastes too much air; cut between graphemes instead (long URLs, CJK).
WORD_MIN_FILL = 0.5
# The widest UTF-8 code point: a fragment must always have room for one.
MAX_CODE_POINT_BYTES = 4

_CLOSERS = "\"')]}»”’」』）】"
_SENTENCE_END = regex.compile(rf"[.!?…][{regex.escape(_CLOSERS)}]{{0,2}}\Z")
_CJK_SENTENCE_END = regex.compile(rf"[。！？][{regex.escape(_CLOSERS)}]{{0,2}}\Z")
# A full stop that ends a list number ("1.", "2)") or an initialism ("e.g.", "U.S.") is no
# place to end a fragment: the reader would get "...include:\n1." and the item later.
_NOT_A_SENTENCE_END = regex.compile(r"\A[\"'(\[]?(?:[0-9]+|(?:[^\W\d_]\.)+[^\W\d_]?)[.)]\Z")
_NUMBERING = regex.compile(r"\A([1-9][0-9]*)/(?:\+|\1) ")
_SURROGATE = regex.compile(r"\p{Cs}")


@dataclass(frozen=True)
class Fragment:
    """One text packet of an answer."""

    index: int  # 1-based position in the whole answer (continues across "more")
    text: str  # exactly what goes on air: numbering + body (+ MORE_HINT when capped)
    body: str  # the answer text carried, without numbering or hint
    final: bool  # no answer text follows it, neither later nor via "more"
    capped: bool  # last fragment sent now, but text remains for "more"

    @property
    def nbytes(self) -> int:
        """Bytes of `text` on air."""
        return utf8_len(self.text)


@dataclass(frozen=True)
class FragmentPlan:
    """All fragments of an answer, and the text kept back for "more"."""

    fragments: tuple[Fragment, ...]
    remainder: str


@dataclass(frozen=True)
class _Cluster:
    start: int  # char offsets in the buffer
    end: int
    end_byte: int  # UTF-8 bytes from the start of the content to the end of this cluster
    space: bool


@dataclass(frozen=True)
class _Scan:
    start: int  # char offset where the content begins (leading whitespace skipped)
    clusters: list[_Cluster]
    overflows: bool  # a settled non-space cluster ends past the limit


def _scan(buf: str, limit: int, finished: bool) -> _Scan:
    """Clusters of the content of `buf`, stopping at the first settled non-space one past `limit` bytes."""
    start: int | None = None
    clusters: list[_Cluster] = []
    nbytes = 0
    for match in graphemes(buf):
        begin, end = match.span()
        settled = finished or end < len(buf)  # a following cluster proves this one is complete
        space = is_space_cluster(match.group())
        if start is None:
            if space and settled:
                continue
            start = begin
        nbytes += utf8_len(match.group())
        clusters.append(_Cluster(begin, end, nbytes, space))
        if settled and not space and nbytes > limit:
            return _Scan(start, clusters, True)
    return _Scan(len(buf) if start is None else start, clusters, False)


def _is_sentence_end(buf: str, clusters: list[_Cluster], i: int) -> bool:
    """True when the boundary before clusters[i] ends a sentence."""
    tail = buf[clusters[max(0, i - 3)].start : clusters[i - 1].end]
    if _CJK_SENTENCE_END.search(tail):
        return True
    if not clusters[i].space or _SENTENCE_END.search(tail) is None:
        return False
    return _NOT_A_SENTENCE_END.match(_last_word(buf, clusters, i)) is None


def _last_word(buf: str, clusters: list[_Cluster], i: int) -> str:
    """The text between the last whitespace before clusters[i] and clusters[i]."""
    start = i - 1
    while start > 0 and not clusters[start - 1].space:
        start -= 1
    return buf[clusters[start].start : clusters[i - 1].end]


def _choose_cut(buf: str, clusters: list[_Cluster], room: int) -> int:
    """Char offset where the body ends: best boundary within `room` bytes with non-space text after it."""
    last_solid = max((i for i, c in enumerate(clusters) if not c.space), default=-1)
    sentence = word = grapheme = 0
    for i in range(1, last_solid + 1):
        prev = clusters[i - 1]
        if prev.end_byte > room:
            break
        if prev.space:
            continue
        grapheme = i
        if clusters[i].space and prev.end_byte >= WORD_MIN_FILL * room:
            word = i
        if prev.end_byte >= SENTENCE_MIN_FILL * room and _is_sentence_end(buf, clusters, i):
            sentence = i
    best = sentence or word or grapheme
    if best:
        return clusters[best - 1].end
    return _split_cluster(buf, clusters[0], room)


def _split_cluster(buf: str, cluster: _Cluster, room: int) -> int:
    """Cut inside an oversize cluster between code points, leaving at least one code point after."""
    used = 0
    cut = cluster.start
    while cut < cluster.end - 1:
        size = utf8_len(buf[cut])
        if used + size > room:
            break
        used += size
        cut += 1
    return cut


class StreamFragmenter:
    """Incremental: feed model tokens as they arrive, get fragments as soon as each is settled."""

    def __init__(self, budget: int, max_fragments: int, start_index: int = 1, tag: str = "") -> None:
        if max_fragments < 1:
            raise ValueError(f"max_fragments must be at least 1, got {max_fragments}")
        if start_index < 1:
            raise ValueError(f"start_index must be at least 1, got {start_index}")
        last = start_index + max_fragments - 1
        needed = utf8_len(tag) + len(f"{last}/{last} ") + utf8_len(MORE_HINT) + MAX_CODE_POINT_BYTES
        if budget < needed:
            raise ValueError(f"budget {budget} bytes leaves no room for text (need at least {needed})")
        self._tag = tag
        # The tag rides in front of every fragment, so the room for numbering and text is what it leaves.
        self._budget = budget - utf8_len(tag)
        self._start_index = start_index
        self._last_index = last
        self._index = start_index
        self._buf = ""
        self._remainder: list[str] = []
        self._capped = False
        self._finished = False

    @property
    def capped(self) -> bool:
        """True when max_fragments was reached while text remains."""
        return self._capped

    @property
    def remainder(self) -> str:
        """Text not sent, for the user's "more" (complete after `finish`)."""
        return strip_space_clusters("".join(self._remainder))

    @property
    def next_index(self) -> int:
        """Index the next fragment would get: the start_index of a "more" continuation."""
        return self._index

    def feed(self, piece: str) -> list[Fragment]:
        """Add a piece of the answer; return the fragments it settled (often none)."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        # A lone surrogate cannot be encoded for the air; keep the text valid rather than fail mid-answer.
        piece = _SURROGATE.sub("\ufffd", piece)
        if self._capped:
            self._remainder.append(piece)
            return []
        self._buf += piece
        return self._drain(finished=False)

    def finish(self) -> list[Fragment]:
        """The answer is complete: return every fragment still held back."""
        if self._finished:
            return []
        self._finished = True
        return self._drain(finished=True)

    def _drain(self, finished: bool) -> list[Fragment]:
        out: list[Fragment] = []
        while not self._capped:
            fragment = self._next(finished)
            if fragment is None:
                break
            out.append(fragment)
        return out

    def _final_prefix(self, k: int) -> str:
        if k == 1 and self._start_index == 1:
            return ""  # the whole answer in one packet: nothing to number
        return f"{k}/{k} "

    def _next(self, finished: bool) -> Fragment | None:
        k = self._index
        capping = k == self._last_index
        final_room = self._budget - len(self._final_prefix(k))
        cut_room = self._budget - len(f"{k}/+ ") - (utf8_len(MORE_HINT) if capping else 0)
        limit = max(final_room, cut_room)
        if not finished and utf8_len(self._buf) <= limit:
            return None  # nothing can be past the limit yet: skip the grapheme scan (most tokens)
        scan = _scan(self._buf, limit, finished)
        if scan.overflows:
            return self._emit_cut(scan, cut_room, capping)
        if not finished:
            return None
        solid = [c for c in scan.clusters if not c.space]
        if not solid:
            self._buf = ""
            return None
        if solid[-1].end_byte <= final_room:
            return self._emit_final(scan.start, solid[-1].end)
        # Only when "10/10 " is longer than "10/+ ": the tail fits a non-final fragment but not the final one.
        return self._emit_cut(scan, cut_room, capping)

    def _emit_final(self, start: int, end: int) -> Fragment:
        k = self._index
        body = self._buf[start:end]
        self._buf = ""
        self._index += 1
        return Fragment(k, self._tag + self._final_prefix(k) + body, body, final=True, capped=False)

    def _emit_cut(self, scan: _Scan, room: int, capping: bool) -> Fragment:
        k = self._index
        end = _choose_cut(self._buf, scan.clusters, room)
        body = self._buf[scan.start : end]
        self._buf = self._buf[end:]
        self._index += 1
        if capping:
            self._capped = True
            self._remainder.append(self._buf)
            self._buf = ""
            return Fragment(k, f"{self._tag}{k}/+ {body}{MORE_HINT}", body, final=False, capped=True)
        return Fragment(k, f"{self._tag}{k}/+ {body}", body, final=False, capped=False)


def fragment(text: str, budget: int, max_fragments: int, start_index: int = 1, tag: str = "") -> FragmentPlan:
    """Split a whole answer at once: the stream fed in one piece (one implementation, two entry points)."""
    stream = StreamFragmenter(budget, max_fragments, start_index, tag)
    fragments = stream.feed(text) + stream.finish()
    return FragmentPlan(tuple(fragments), stream.remainder)


def is_final_text(index: int, text: str, tag: str = "") -> bool:
    """True when fragment `index`, as it goes on air (`text`, after `tag`), ends its answer: not a "k/+" one."""
    return not text.removeprefix(tag).startswith(f"{index}/+ ")


def cut_off_ending(index: int, text: str, budget: int, rewritable: bool, tag: str = "") -> tuple[int, str]:
    """(index, text) of the fragment that ends an answer cut off after fragment `index` (`text`).

    That fragment made final with `CUT_OFF` appended, when it may still be rewritten (not yet
    delivered) and the result fits `budget` bytes; else one more, final fragment carrying `CUT_OFF`.
    """
    if rewritable:
        prefix = "" if index == 1 else f"{index}/{index} "  # as `StreamFragmenter` numbers a final one
        ended = f"{tag}{prefix}{strip_numbering(text, tag)} {CUT_OFF}"
        if utf8_len(ended) <= budget:
            return index, ended
    return index + 1, f"{tag}{index + 1}/{index + 1} {CUT_OFF}"


def strip_numbering(fragment_text: str, tag: str = "") -> str:
    """Inverse of the tag/numbering/hint decoration: returns the body."""
    if tag and fragment_text.startswith(tag):
        fragment_text = fragment_text[len(tag) :]
    match = _NUMBERING.match(fragment_text)
    if match is None:
        return fragment_text
    body = fragment_text[match.end() :]
    if "+" in match.group() and body.endswith(MORE_HINT):
        body = body[: -len(MORE_HINT)]
    return body


def looks_like_meshbot_output(text: str, budget: int, tag: str = "") -> bool:
    """True only for text a meshbot wrote and a human would not type: the gate refuses it as another bot's.

    The rule, and why:

    * ``tag`` (when set) leads the text, before or after the numbering: meshbot marks its answers so.
    * the ``[reply "more"]`` invitation ends it: only a capped meshbot fragment does.
    * with no tag configured only: ``"k/+ body"`` with the body at least `WORD_MIN_FILL` of the room a
      `budget`-byte fragment leaves: "+" as the total is this module's own invention, and it cuts a continued
      fragment only once it is that full. With a tag, the tag alone marks meshbot's output, so a person's
      own long "1/+ …" part (a multi-part question) is never taken for a bot's.

    Everything else is admitted, because people number their own multi-part questions: "1/2 what is…",
    "2/2 …and why?", "(1/2)", "[2/2]", and even meshbot's own final "k/k" or unnumbered single packet
    (they carry nothing a person would not type). Known bots are refused by node id (`limits.bots`).
    Pass the smallest budget this bot cuts to, so a same-config meshbot's fragments are all caught.
    """
    if tag and (text.lstrip().startswith(tag) or strip_numbering(text).startswith(tag)):
        return True
    if text.rstrip().endswith(MORE_HINT.strip()):
        return True
    match = _NUMBERING.match(text)
    if tag or match is None or "+" not in match.group():
        return False
    room = budget - len(match.group())
    return utf8_len(text[match.end() :]) >= WORD_MIN_FILL * room


def looks_like_fragment(text: str) -> bool:
    """True when text carries our numbering ("k/+ " or "k/k "); unnumbered single replies can't be told."""
    return _NUMBERING.match(text) is not None


def labelled(text: str, tag: str, budget: int) -> str:
    """A one-packet reply (a command's answer, a notice): the tag, then text cut between graphemes to fit."""
    room = budget - utf8_len(tag)
    kept, used = [], 0
    for match in graphemes(text.strip()):
        size = utf8_len(match.group())
        if used + size > room:
            break
        kept.append(match.group())
        used += size
    return tag + "".join(kept).rstrip()
