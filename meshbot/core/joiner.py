"""Multi-part questions: when one node's messages are one question, and when to stop waiting. Pure: no I/O.

A handset caps what a person types at 200 bytes, so a long question arrives as several messages. The rule,
applied to each message a node sends (per conversation: its DMs, or one channel):

* **Marked parts.** A leading ``1/3``, ``(1/2)``, ``[2/2]`` or ``1/+`` (or the same in brackets at the end)
  marks a part; the marker is removed. ``k/n`` with ``k < n`` and ``k/+`` say more follows: wait up to
  ``[join] part_wait_s`` for the next part. ``n/n`` is the last part: answer at once.
* **Cut off.** A message of ``[join] long_bytes`` (170) or more that does not end a sentence was plainly cut
  at the handset's cap: it is a part, and more follows (``part_wait_s``).
* **Complete.** No marker, ends in ``?``, ``.`` or ``!`` (or an emoji) and well under the cap (below ``long_bytes``): it
  is answered at once, never held. If earlier parts are waiting, it is their last part and ends the join.
* **Anything else** (``hello``, ``what is lora``, a long message ending a sentence) may be followed by more:
  it waits ``[join] window_s`` (8 s) for a next message, and each new part restarts the wait.

A join ends when its last part says so, when the wait passes with nothing new, or at ``max_parts``; its
parts, joined with spaces, go to the model as one question that replies to the last part's packet.
A human's ``2/2 ...`` is a part here, never another bot: bots are told apart by their AI tag (core/gate.py).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import regex

from meshbot.core.config import JoinConfig

_MARK = r"([1-9][0-9]?)\s?/\s?([1-9][0-9]?|\+)"
# At the start, bare or in brackets; a bare one must be followed by a space (or nothing) so "1/2cup" is text.
_LEADING = regex.compile(rf"\A\s*(?:\({_MARK}\)|\[{_MARK}\]|{_MARK}(?=\s|\Z))[\s:.,-]*")
# At the end only in brackets: a bare "3/4" there is more likely a fraction.
_TRAILING = regex.compile(rf"\s*(?:\({_MARK}\)|\[{_MARK}\])\s*\Z")
# A sentence end, allowing closing quotes/brackets after it (and CJK full stops); or an emoji, which people
# put where a full stop would go ("tell me about the moon 🌙").
_SENTENCE_END = regex.compile(
    r"(?:[.?!…。？！][\"'”’»)\]]*|\p{Extended_Pictographic}[\p{M}\u200d\ufe0f\p{Extended_Pictographic}\p{Sk}]*)\s*\Z"
)


class Shape(enum.Enum):
    """What a message says about the question it belongs to."""

    COMPLETE = "complete"  # a whole short question: answer now (ends a waiting join)
    LAST = "last"  # an explicit last part (n/n): answer now
    MORE = "more"  # says more follows (k/n, k/+, cut off): wait part_wait_s
    OPEN = "open"  # may be followed by more: wait window_s


@dataclass(frozen=True)
class Part:
    """One message judged as a (possible) part: its text without any marker, and its shape."""

    text: str
    shape: Shape
    marked: bool


def _marker(text: str) -> tuple[str, int, int | None] | None:
    """(text without the marker, k, n or None for "+"), if the text carries a part marker."""
    for pattern in (_LEADING, _TRAILING):
        match = pattern.search(text)
        if match is None:
            continue
        k_raw, n_raw = [g for g in match.groups() if g is not None]
        k = int(k_raw)
        n = None if n_raw == "+" else int(n_raw)
        if n is not None and k > n:
            continue  # "3/2" is not a part number
        rest = (text[: match.start()] + text[match.end() :]).strip()
        return rest, k, n
    return None


def ends_sentence(text: str) -> bool:
    """True when the text ends in sentence punctuation (closing quotes allowed)."""
    return _SENTENCE_END.search(text) is not None


def judge(text: str, cfg: JoinConfig) -> Part:
    """Which shape one message has, by the rule in the module docstring."""
    text = text.strip()
    marked = _marker(text)
    if marked is not None:
        rest, k, n = marked
        return Part(rest or text, Shape.LAST if n is not None and k >= n else Shape.MORE, True)
    size = len(text.encode("utf-8"))
    if ends_sentence(text):
        return Part(text, Shape.COMPLETE if size < cfg.long_bytes else Shape.OPEN, False)
    return Part(text, Shape.MORE if size >= cfg.long_bytes else Shape.OPEN, False)


T = TypeVar("T")


@dataclass
class Waiting(Generic[T]):
    """The parts of one conversation's question so far, and when to stop waiting for more."""

    key: Hashable
    items: list[T] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    deadline: float = 0.0

    @property
    def question(self) -> str:
        """The parts joined into one question."""
        return " ".join(t for t in self.texts if t)


class Joiner(Generic[T]):
    """Holds the parts of each conversation's question until the join ends; the caller owns durability."""

    def __init__(self, cfg: JoinConfig) -> None:
        self._cfg = cfg
        self._waiting: dict[Hashable, Waiting[T]] = {}

    def waiting(self, key: Hashable) -> bool:
        """True when parts of a question from this conversation are waiting."""
        return key in self._waiting

    def __len__(self) -> int:
        return len(self._waiting)

    def count(self, key: Hashable) -> int:
        """Parts waiting in this conversation."""
        join = self._waiting.get(key)
        return len(join.items) if join is not None else 0

    def add(self, key: Hashable, item: T, part: Part, now: float) -> Waiting[T] | None:
        """Add a part; return the finished join when this part ends it, else None (keep waiting)."""
        join = self._waiting.setdefault(key, Waiting(key))
        join.items.append(item)
        join.texts.append(part.text)
        wait = self._cfg.part_wait_s if part.shape is Shape.MORE else self._cfg.window_s
        join.deadline = now + wait
        if part.shape in (Shape.COMPLETE, Shape.LAST) or len(join.items) >= self._cfg.max_parts:
            return self._waiting.pop(key)
        return None

    def due(self, now: float) -> list[Waiting[T]]:
        """Joins whose wait has passed: answer them with the parts they have."""
        done = [join for join in self._waiting.values() if join.deadline <= now]
        for join in done:
            del self._waiting[join.key]
        return done

    def drop(self, key: Hashable) -> Waiting[T] | None:
        """Forget a conversation's waiting parts (returns them)."""
        return self._waiting.pop(key, None)
