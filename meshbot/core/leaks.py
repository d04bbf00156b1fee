"""Keep prompt framing off the air: "The answer is", an echoed question, "Question: ...", "local
notes" and talk of the reply's length. Pure.

The prompt no longer says any of these (core.prompting), but a small model still imitates what it
has seen elsewhere, so what it writes passes this filter sentence by sentence as it streams:
a sentence is held until it ends (at most one sentence of delay), then cleaned or dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# Leak kinds, as `meshbot eval` counts them.
ANSWER_IS = "answer-is"
QUESTION_LABEL = "question-label"
ECHO = "echo"
NOTES_TALK = "notes-talk"
BUDGET_TALK = "budget-talk"
KINDS = (ANSWER_IS, QUESTION_LABEL, ECHO, NOTES_TALK, BUDGET_TALK)

# A lead-in to strip from a sentence's start; the rest of the sentence stays.
_LEAD_IN = re.compile(
    r"(?:^|(?<=,\s)|(?<=;\s))(?:(?:so|well|okay|ok),?\s+)?(?:the\s+(?:short\s+)?answer\s+(?:is|would\s+be)\s*:?\s*|answer\s*:\s*|"
    r"la\s+respuesta\s+es\s*:?\s*|respuesta\s*:\s*|die\s+antwort\s+(?:ist|lautet)\s*:?\s*|antwort\s*:\s*|"
    r"la\s+réponse\s+est\s*:?\s*|réponse\s*:\s*)",
    re.IGNORECASE,
)
_NOTES_LEAD_IN = re.compile(
    r"^(?:according\s+to|based\s+on|from|as\s+per|per)\s+(?:the\s+)?(?:local\s+|operator'?s?\s+|given\s+)?"
    r"(?:notes?|text|reference|passage|context)\s*(?:above|provided|given)?\s*,\s*",
    re.IGNORECASE,
)
# A label that starts a new, invented exchange: everything from it on is dropped.
_QUESTION_LABEL = re.compile(r"(?:^|\s)(?:question|q|user|pregunta|frage|asker)\s*:", re.IGNORECASE)
_NOTES_TALK = re.compile(
    r"\b(?:local\s+notes?|operator'?s?\s+notes?|the\s+notes?\s+(?:say|says|do|does|don't|mention|above)|"
    r"notas\s+locales|lokalen?\s+notizen|notes\s+locales|end\s+of\s+local\s+notes|mesh\s+facts)\b",
    re.IGNORECASE,
)
_BUDGET_TALK = re.compile(
    r"\b(?:(?:one|two|three|four|five|\d+)\s+short\s+sentences?|short\s+sentences?\s+at\s+most|"
    r"(?:byte|word)\s+(?:budget|limit)|no\s+markdown|plain\s+text,?\s+no|in\s+plain\s+text)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# An answer the model put in quotes after "The answer is": "LoRa" - a mesh network.
_QUOTED = re.compile(r'^["“]([^"”]*)["”]')
# A sentence ends at .!? (or a line break) followed by whitespace; "?" alone can end a question.
_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n+")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def is_echo(sentence: str, question: str) -> bool:
    """True when a sentence mostly repeats the question (most of its words are the question's)."""
    said, asked = _words(sentence), set(_words(question))
    if len(said) < 2 or not asked:
        return False
    shared = sum(w in asked for w in said)
    # Most of the sentence is the question's, and most of the question is in it: "Boiling water kills
    # parasites." shares three of five words with "Does boiling water kill parasites?": an answer.
    return shared / len(said) >= 0.8 and shared >= max(2, 0.8 * len(asked))


def clean_sentence(sentence: str, question: str, first: bool) -> tuple[str, str | None, bool]:
    """(kept text, leak kind or None, stop here) for one sentence of an answer."""
    label = _QUESTION_LABEL.search(sentence)
    if label is not None:
        before = sentence[: label.start()].strip()
        return (before, QUESTION_LABEL, True)
    if (first or sentence.rstrip().endswith("?")) and is_echo(sentence, question):
        return "", ECHO, False
    kind = None
    stripped = _NOTES_LEAD_IN.sub("", sentence)
    if stripped != sentence:
        kind = NOTES_TALK
    if _NOTES_TALK.search(stripped):
        return "", NOTES_TALK, False
    if _BUDGET_TALK.search(stripped):
        return "", BUDGET_TALK, False
    again = _LEAD_IN.sub("", stripped)
    if again != stripped:
        kind = ANSWER_IS
        again = _QUOTED.sub(r"\1", again.strip())
    if again and again != sentence:
        again = again[0].upper() + again[1:]
    return again, kind, False


# A sentence is held at most this many characters: then it is judged on what it has so far, so a long
# sentence without a full stop still streams (a fragment's text is about 190 bytes).
HOLD_MAX = 120
# While a long sentence streams, this much is kept back: a "Question:" label may straddle two pieces.
LABEL_ROOM = 12


class LeakFilter:
    """Streams an answer's tidied text through `clean_sentence`, a sentence (or HOLD_MAX) at a time."""

    def __init__(self, question: str) -> None:
        self.question = question
        self.found: list[str] = []  # leak kinds removed, in order
        self._buf = ""
        self._first = True
        self._stopped = False
        self._mode = "hold"  # hold: judging a sentence; pass: a long sentence judged clean; drop: judged a leak

    def feed(self, piece: str) -> list[str]:
        """Take tidied text; return what is settled and clean."""
        if self._stopped:
            return []
        self._buf += piece
        out: list[str] = []
        while not self._stopped and self._buf:
            step = self._step()
            if step is None:
                break
            out += step
        return out

    def _step(self) -> list[str] | None:
        """Handle what the buffer settles; None when it must wait for more text."""
        end = _END.search(self._buf)
        if self._mode == "drop":
            self._buf, self._mode = (self._buf[end.end() :], "hold") if end else ("", "drop")
            return [] if end else None
        if self._mode == "pass":
            return self._pass(end)
        if end is not None:
            sentence, sep = self._buf[: end.start()] + end.group().rstrip(), end.group()[len(end.group().rstrip()) :]
            self._buf = self._buf[end.end() :]
            return self._emit(sentence, sep)
        if len(self._buf) < HOLD_MAX:
            return None
        kept, kind, stop = clean_sentence(self._buf, self.question, self._first)
        if kind is not None:
            self.found.append(kind)
        self._buf, self._stopped = "", stop
        if stop or kept.strip():
            self._mode = "pass"
            self._first = self._first and not kept.strip()
            return [kept] if kept.strip() else []
        self._mode = "drop"
        return []

    def _pass(self, end: re.Match[str] | None) -> list[str] | None:
        """The rest of a long sentence judged clean: out as it comes, up to a "Question:" label."""
        upto = end.end() if end is not None else max(0, len(self._buf) - LABEL_ROOM)
        label = _QUESTION_LABEL.search(self._buf, 0, end.end() if end is not None else len(self._buf))
        if label is not None:
            self.found.append(QUESTION_LABEL)
            self._stopped, text, self._buf = True, self._buf[: label.start()], ""
            return [text] if text.strip() else []
        if upto == 0:
            return None
        text, self._buf = self._buf[:upto], self._buf[upto:]
        if end is not None:
            self._mode = "hold"
            text = text.rstrip() + (" " if "\n" not in end.group() else "\n")
        return [text]

    def finish(self) -> list[str]:
        """Whatever is left at the end of the answer."""
        if self._stopped or not self._buf.strip():
            return []
        rest, self._buf = self._buf, ""
        if self._mode == "drop":
            return []
        if self._mode == "pass":
            label = _QUESTION_LABEL.search(rest)
            if label is not None:
                self.found.append(QUESTION_LABEL)
                rest = rest[: label.start()]
            return [rest] if rest.strip() else []
        return self._emit(rest, "")

    def _emit(self, sentence: str, sep: str) -> list[str]:
        kept, kind, stop = clean_sentence(sentence, self.question, self._first)
        if kind is not None:
            self.found.append(kind)
        self._stopped = stop
        if not kept.strip():
            return []
        self._first = False
        return [kept + ("" if stop else (" " if sep and "\n" not in sep else sep))]


def filtered(pieces: Iterable[str], leak_filter: LeakFilter) -> Iterator[str]:
    """The pieces through the filter, then its last sentence."""
    for piece in pieces:
        yield from leak_filter.feed(piece)
    yield from leak_filter.finish()


def clean(text: str, question: str) -> tuple[str, list[str]]:
    """A whole answer through the filter: (clean text, leak kinds found)."""
    leak_filter = LeakFilter(question)
    out = "".join(filtered([text], leak_filter)).strip()
    return out, leak_filter.found


def leak_kinds(text: str, question: str) -> list[str]:
    """The leak kinds a text on air still shows (for `meshbot eval`, which counts them)."""
    return clean(text, question)[1]
