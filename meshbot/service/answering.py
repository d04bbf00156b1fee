"""The one entry point for "answer this question", shared by the daemon's worker, `meshbot ask` and `meshbot eval`.

`Answerer.stream` decides how a question is answered and returns an `AnswerStream`, whose fragments are
exactly what would go on air:

* `open`: the model writes, its text streams out tidied (no markdown), filtered (no prompt framing,
  core.leaks) and cut into fragments as it arrives.
* `grounded`: a factual question with passages found (operator's notes, the shipped reference) is
  answered by the model from them; the whole answer is checked against the passages before any of
  it goes out (core.grounding). If it changed or dropped a fact, or wrote mostly words of its own,
* `extractive`: the passages' own most relevant sentences go out instead, tagged with the title.
* `declined`: a factual question with nothing found gets one short fragment saying so and what can
  help; the model is not asked to free-write.

Small talk and questions about the bot go to the model in either mode (counted as `open`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from meshbot.core import limits
from meshbot.core.config import AnswersConfig, Config
from meshbot.core.domain import Asker, ChatTurn, FollowUp, Generation, GenerationStats, Model, Note
from meshbot.core.events import Event
from meshbot.core.fragmenter import Fragment, StreamFragmenter
from meshbot.core.grounding import check_facts, extractive, is_chat, key_sentence
from meshbot.core.language import guess_language
from meshbot.core.leaks import LeakFilter, filtered
from meshbot.core.prompting import build_generation, numbering_room
from meshbot.core.text import tidy_stream, utf8_len
from meshbot.service.mesh_context import SOURCE_NAME as MESH_SOURCE
from meshbot.storage.knowledge import STOPWORDS

log = logging.getLogger(__name__)

Mode = Literal["grounded", "open"]
PATHS = ("grounded", "extractive", "declined", "open")

# One short fragment in the asker's language: no note, no guess, and what can help instead.
DECLINE = {
    "en": "I don't know: I have no note on that, and I won't guess. In an emergency call your emergency number; or ask a person on this channel.",
    "es": "No lo sé: no tengo ninguna nota sobre eso y no voy a adivinar. En una emergencia llama al número de emergencias, o pregunta a una persona en este canal.",
    "de": "Das weiß ich nicht: Dazu habe ich keine Notiz, und ich rate nicht. Im Notfall die Notrufnummer wählen, oder eine Person auf diesem Kanal fragen.",
    "fr": "Je ne sais pas : je n'ai pas de note à ce sujet et je ne devine pas. En cas d'urgence, appelez le numéro d'urgence, ou demandez à une personne sur ce canal.",
    "pt": "Não sei: não tenho nenhuma nota sobre isso e não vou adivinhar. Numa emergência ligue para o número de emergência, ou pergunte a uma pessoa neste canal.",
    "it": "Non lo so: non ho nessuna nota su questo e non tiro a indovinare. In caso di emergenza chiama il numero di emergenza, o chiedi a una persona su questo canale.",
    "ru": "Не знаю: заметки об этом нет, гадать не буду. В беде звоните в экстренную службу или спросите людей на канале.",
}
_SHORT_DECLINE = {
    "en": "I don't know: no note on that.",
    "es": "No lo sé: no tengo nota sobre eso.",
    "de": "Das weiß ich nicht: keine Notiz dazu.",
    "fr": "Je ne sais pas : pas de note là-dessus.",
    "pt": "Não sei: não tenho nota sobre isso.",
    "it": "Non lo so: non ho note su questo.",
    "ru": "Не знаю: заметки об этом нет.",
}


class Abandoned(Exception):
    """The caller asked the answer to stop mid-generation (shutdown)."""


def fragment_budget(cfg: Config, dm: bool) -> int:
    """Bytes one fragment may use: the configured size under the hard ceiling for a DM or a channel reply."""
    ceiling = limits.MAX_TEXT_BYTES_DM_WITH_REPLY_ID if dm else limits.MAX_TEXT_BYTES_CHANNEL_WITH_REPLY_ID
    return min(cfg.mesh.max_fragment_bytes, ceiling)


def model_params(model: Model, cfg: AnswersConfig) -> float | None:
    """The model's parameter count: what the backend reads from its GGUF, else `[answers] model_params`."""
    params = getattr(model, "n_params", None)
    if isinstance(params, int | float) and params > 0:
        return float(params)
    return cfg.model_params or None


def answer_mode(cfg: AnswersConfig, model: Model) -> Mode:
    """`grounded` or `open`: as configured, or for "auto" by the model's size (unknown: grounded)."""
    if cfg.mode != "auto":
        return cfg.mode
    params = model_params(model, cfg)
    return "open" if params is not None and params >= cfg.open_min_params else "grounded"


@dataclass(frozen=True)
class Asked:
    """One question as the answerer gets it: its words and everything gathered for it."""

    question: str
    history: tuple[ChatTurn, ...] = ()
    asker: Asker | None = None
    notes: tuple[Note, ...] | None = None  # None: no knowledge at all; (): nothing relevant found
    seed: int | None = None
    conversation: str | None = None
    mesh: str | None = None  # the node directory's facts for a question about the mesh (service/mesh_context.py)
    max_tokens: int | None = None  # a tighter cap than the budget's (power economy)
    follow_up: FollowUp | None = None  # the next prompt's history after this exchange (memory's Context.follow_up)


class AnswerStream:
    """One answer: iterate for its fragments as they fill; then read `path`, `text`, `stats`, `remainder`, `capped`."""

    def __init__(
        self,
        model: Model,
        request: Generation | None,
        fragment_bytes: int,
        max_fragments: int,
        should_stop: Callable[[], bool] = lambda: False,
        tag: str = "",
        *,
        question: str = "",
        path: str = "open",
        grounding: Grounding | None = None,
        fixed: str | None = None,
    ) -> None:
        self.model = model
        # The backend learns how memory will keep the answer: the state it keeps for the follow-up holds that.
        self.request = dataclasses.replace(request, kept_answer=self.kept) if request is not None else None
        self.stats = GenerationStats()
        self.fragments: list[Fragment] = []
        self.path = path  # grounded | extractive | declined | open: which way this answer went
        self.model_text = ""  # what the model wrote (tidied, filtered) when its text was not sent
        self._pieces: list[str] = []  # the text sent, for memory and `!src`
        self._fragmenter = StreamFragmenter(fragment_bytes, max_fragments, tag=tag)
        self._should_stop = should_stop
        self.grounding = grounding
        self._fixed = fixed
        self.leaks = LeakFilter(question)
        self.tokens = 0  # pieces the model streamed so far (one per token from llama.cpp)

    def __iter__(self) -> Iterator[Fragment]:
        """Fragments in order, each as soon as text past its end proves it full; raises Abandoned."""
        for piece in self._text():
            if self._should_stop():
                raise Abandoned
            self._pieces.append(piece)
            yield from self._keep(self._fragmenter.feed(piece))
        yield from self._keep(self._fragmenter.finish())

    def _text(self) -> Iterator[str]:
        if self._fixed is not None:
            yield self._fixed
            return
        # Tidy before filtering and fragmenting, so byte counts are of what is sent.
        written = filtered(tidy_stream(self._counted()), self.leaks)
        if self.grounding is None:
            yield from written
            return
        whole = []
        for piece in written:  # checked whole: nothing goes out before the facts are compared
            if self._should_stop():
                raise Abandoned
            whole.append(piece)
        text = "".join(whole).strip()
        kept = self.grounding.verdict(text)
        if kept == text:
            yield text
        else:
            self.path, self.model_text = "extractive", text
            yield kept

    def kept(self, pieces: Sequence[str]) -> str:
        """The `text` this answer ends with, had the model written `pieces`: the same steps on the same pieces."""
        written = "".join(filtered(tidy_stream(pieces), LeakFilter(self.leaks.question)))
        if self.grounding is not None:
            written = self.grounding.verdict(written.strip())  # the extractive answer, if that is what goes out
        return written.strip()

    def _counted(self) -> Iterator[str]:
        assert self.request is not None
        for piece in self.model.stream(self.request, self.stats):
            self.tokens += 1
            yield piece

    def cut_off(self, marker: str) -> list[Fragment]:
        """End an answer whose stream stopped: what is held back, then `marker`, as the last fragment(s)."""
        # The marker is not part of the answer text (history, memory): only of what goes on air.
        return list(self._keep(self._fragmenter.feed(marker) + self._fragmenter.finish()))

    def _keep(self, fragments: list[Fragment]) -> Iterator[Fragment]:
        for frag in fragments:
            self.fragments.append(frag)
            yield frag

    @property
    def text(self) -> str:
        """The whole answer as sent (tidied), including what was kept for "more"."""
        return "".join(self._pieces).strip()

    @property
    def capped(self) -> bool:
        """True when the answer hit the fragment cap and text is kept for "more"."""
        return self._fragmenter.capped

    @property
    def remainder(self) -> str:
        """Text past the cap, for "more"."""
        return self._fragmenter.remainder

    @property
    def next_index(self) -> int:
        """The number the next fragment of this answer would carry."""
        return self._fragmenter.next_index

    @property
    def nbytes(self) -> int:
        """Bytes of every fragment so far."""
        return sum(f.nbytes for f in self.fragments)


class Grounding:
    """The passages a grounded answer was given, and the check of what the model made of them."""

    def __init__(self, question: str, notes: Sequence[Note], budget_bytes: int, whole_bytes: int, lang: str) -> None:
        self.question = question
        self.notes = tuple(notes)
        self.budget_bytes = budget_bytes  # one fragment's text: an extractive answer fits it if it can
        self.whole_bytes = whole_bytes  # every fragment's: when the best sentence is longer than one
        self.lang = lang
        self.reason = ""  # why the model's answer was replaced, for the log

    def extract(self) -> str:
        """The passages' most relevant sentences within the budget, tagged with the note's title."""
        return extractive(self.question, self.notes, self.budget_bytes, STOPWORDS, self.whole_bytes)

    def verdict(self, answer: str) -> str:
        """The model's answer when it kept the passage's facts, else the extractive answer."""
        if not answer:
            self.reason = "empty"
            return self.extract()
        passages = [note.text for note in self.notes]
        key = key_sentence(self.question, self.notes, STOPWORDS)
        check = check_facts(answer, passages, self.question, key, self.lang, STOPWORDS)
        if check.ok:
            return answer
        self.reason = (
            f"invented {sorted(check.invented)}" if check.invented
            else f"dropped {sorted(check.dropped)}" if check.dropped
            else f"{check.unsupported:.0%} of its words not in the notes"
        )  # fmt: skip
        return self.extract() or answer


def decline_text(question: str, budget_bytes: int) -> str:
    """The one-fragment "I don't know" in the question's language, shortened if the fragment is small."""
    lang = guess_language(question, tuple(DECLINE))
    text = DECLINE[lang]
    return text if utf8_len(text) <= budget_bytes else _SHORT_DECLINE[lang]


class Answerer:
    """Answers questions for one configuration and model: picks the path, builds the prompt, checks the answer."""

    def __init__(self, cfg: Config, model: Model) -> None:
        self.cfg = cfg
        self.model = model
        self.mode: Mode = answer_mode(cfg.answers, model)

    def stream(
        self,
        asked: Asked,
        fragment_bytes: int,
        max_fragments: int,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> AnswerStream:
        """The answer to `asked` as a stream of fragments of at most `fragment_bytes` bytes each."""
        tag = self.cfg.mesh.ai_tag
        args = (fragment_bytes, max_fragments, should_stop, tag)
        chat = is_chat(asked.question)
        notes = None if chat else asked.notes
        mesh = None if chat else asked.mesh
        if self.mode == "grounded" and not chat and not notes and not mesh:
            room = fragment_bytes - utf8_len(tag)
            return AnswerStream(self.model, None, *args, question=asked.question, path="declined",
                                fixed=decline_text(asked.question, room))  # fmt: skip
        request = build_generation(
            asked.question, self.cfg, fragment_bytes, max_fragments, asked.history, asker=asked.asker, notes=notes,
            mesh=mesh,
        )  # fmt: skip
        max_tokens = min(request.max_tokens, asked.max_tokens or request.max_tokens)
        request = Generation(request.turns, max_tokens, asked.seed, asked.conversation, request.remembered,
                             next_history=asked.follow_up)  # fmt: skip
        if self.mode == "open" or chat or not (notes or mesh):
            return AnswerStream(self.model, request, *args, question=asked.question, path="open")
        # The directory's facts are checked like a note's: a battery figure the model changed is not sent.
        sources = (*(notes or ()), *((Note(MESH_SOURCE, mesh),) if mesh else ()))
        # An extractive answer fits what the fragments carry after the tag (and numbering, past one).
        one = fragment_bytes - utf8_len(tag)
        whole = (one - numbering_room(max_fragments)) * max_fragments
        grounding = Grounding(asked.question, sources, one, whole, guess_language(asked.question))
        return AnswerStream(self.model, request, *args, question=asked.question, path="grounded", grounding=grounding)


def log_path(answer: AnswerStream, query_label: str) -> None:
    """One log line for the path an answer took (and, for extractive, why the model's text was not sent)."""
    why = ""
    if answer.path == "extractive" and answer.grounding is not None:
        why = f" (model's answer {answer.grounding.reason})"
    log.info(
        "%s answered %s%s%s",
        query_label,
        answer.path,
        why,
        f"; prompt framing removed: {', '.join(answer.leaks.found)}" if answer.leaks.found else "",
        extra={"event": Event.ANSWER_PATH, "path": answer.path, "leaks": len(answer.leaks.found)},
    )
