"""The knowledge context source: the operator's notes, looked up for each question, and `!src`.

`KnowledgeSource.gather` puts the best passages (BM25, within a token budget) into the question's
context as notes; `answered` remembers which note titles that answer drew on, per asker, so that
`last_source(node, channel)` can tell the asker where the answer came from. A background thread
indexes the folders at start-up and again whenever a file changes; until the first pass is done a
question gets the notes indexed so far (possibly none), never a wait.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from meshbot.core.config import AnswersConfig, KnowledgeConfig
from meshbot.core.domain import ChatTurn, Context, Note
from meshbot.core.emergency import is_emergency_note
from meshbot.core.events import Event
from meshbot.core.prompting import BYTES_PER_TOKEN_PLANNED
from meshbot.core.text import graphemes, utf8_len
from meshbot.core.trust import conversation_of
from meshbot.service.queueing import Query
from meshbot.service.reference import Reference, open_reference
from meshbot.storage.knowledge import Hit, KnowledgeIndex, SyncReport, covered, query_words

log = logging.getLogger(__name__)

# A passage at least this share as relevant as the best one (by BM25) goes in too; weaker ones
# would only distract a small model.
RELATIVE_SCORE = 0.5
# Passages looked at per question before the budget cut.
CANDIDATES = 12
# `!src` must fit in one fragment with room to spare for the command's own words.
SOURCE_MAX_BYTES = 160
SOURCE_JOIN = "; "
# Queries between gather and answered whose notes are held for `answered` (one worker: a handful).
_PENDING_MAX = 64


def note_tokens(note: Note) -> int:
    """Prompt tokens a note takes, estimated from bytes for the worst script (the backend's count is not needed)."""
    shown = f"{note.text}\n\n"
    return math.ceil(utf8_len(shown) / BYTES_PER_TOKEN_PLANNED)


def within_budget(hits: Sequence[Hit], max_passages: int, token_budget: int) -> tuple[Note, ...]:
    """The best hits that are relevant enough and fit the token budget together, best first."""
    if not hits:
        return ()
    best = hits[0].score  # bm25: negative, lower is better
    chosen: list[Note] = []
    used = 0
    for hit in hits:
        if len(chosen) == max_passages:
            break
        if hit.score > best * RELATIVE_SCORE:
            break  # sorted by score: every later hit is weaker still
        cost = note_tokens(hit.note)
        if used + cost > token_budget:
            continue  # a shorter, slightly weaker passage may still fit
        chosen.append(hit.note)
        used += cost
    return tuple(chosen)


def _best_cover(words: Sequence[str], notes: Sequence[Note]) -> int:
    """How many of the question's words the best of these notes holds."""
    return max((covered(words, f"{note.title} {note.text}") for note in notes), default=0)


def _fit_bytes(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-8 bytes between grapheme clusters, with an ellipsis when cut."""
    if utf8_len(text) <= limit:
        return text
    out, size, room = [], 0, limit - utf8_len("…")
    for match in graphemes(text):
        size += utf8_len(match.group())
        if size > room:
            break
        out.append(match.group())
    return "".join(out).rstrip() + "…"


def source_key(query: Query) -> tuple[int, int | None]:
    """(node, channel) under which an answer's sources are kept: channel None for a proven DM."""
    return conversation_of(query.inbound)


class KnowledgeSource:
    """Notes for each question from the index; keeps the index in step with the files in the background."""

    def __init__(
        self,
        index: KnowledgeIndex,
        cfg: KnowledgeConfig,
        reference: Reference | None = None,
        may_reindex: Callable[[], bool] | None = None,
    ) -> None:
        self.index = index
        self.cfg = cfg
        self.reference = reference  # the shipped reference, searched after the operator's notes
        self._may_reindex = may_reindex  # false (power economy or sleep): keep the index as it is for now
        self.ready = threading.Event()  # set after the first full pass over the folders
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: OrderedDict[int, tuple[str, ...]] = OrderedDict()
        self._pending_lock = threading.Lock()

    # -- the indexer --------------------------------------------------------------------------
    def start(self) -> None:
        """Index in a background thread now, then every `reindex_interval_s`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="meshbot-knowledge", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the indexer and close the index."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
        self.index.close()
        if self.reference is not None:
            self.reference.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.ready.is_set() or self._may_reindex is None or self._may_reindex():
                    self.refresh()
            except Exception:  # a bad file or a full disk must not end the indexer for good
                log.exception("knowledge indexing failed", extra={"event": Event.KNOWLEDGE_ERROR})
            self.ready.set()
            self._stop.wait(self.cfg.reindex_interval_s)

    def refresh(self) -> SyncReport:
        """One pass: index new and changed files, drop deleted ones; logs what changed."""
        report = self.index.sync(self.cfg.paths if self.cfg.enabled else (), self._stop)
        if report.indexed or report.dropped or report.failed or not self.ready.is_set():
            files, passages = self.index.counts()
            log.info(
                "knowledge indexed: %d file(s) new or changed, %d dropped, %d unreadable; %d files, %d passages in all",
                report.indexed,
                report.dropped,
                report.failed,
                files,
                passages,
                extra={"event": Event.KNOWLEDGE_INDEXED, "files": files, "passages": passages},
            )
        return report

    # -- questions ----------------------------------------------------------------------------
    def notes_for(self, question: str, history: Sequence[ChatTurn] = ()) -> tuple[Note, ...]:
        """The passages for a question that fit the token budget; () when nothing relevant is indexed.

        A follow-up ("what powers it?") names little: the asker's previous question is searched with it.
        """
        earlier = [turn.content for turn in history if turn.role == "user"][-1:]
        asked = " ".join([*earlier, question])
        limit = max(CANDIDATES, self.cfg.max_passages)
        own = within_budget(self.index.search(asked, limit), self.cfg.max_passages, self.cfg.token_budget)
        if self.reference is None:
            return own
        # The reference, in the language of the question itself (not the earlier turn's), when the operator's
        # notes hold nothing on it, or only a weaker match: "How do I stop heavy bleeding?" is the reference's,
        # even if a note says where the bleeding kit is. Never both: a local answer is not diluted.
        found = within_budget(
            self.reference.search(asked, limit, self.reference.language_of(question)),
            self.cfg.max_passages,
            self.cfg.token_budget,
        )
        if not own:
            return found
        words = query_words(question)
        return found if _best_cover(words, found) > _best_cover(words, own) else own

    def emergency_notes_for(self, question: str, history: Sequence[ChatTurn] = ()) -> tuple[Note, ...]:
        """An emergency's notes: those whose heading or path says emergency or first aid first, then the rest."""
        general = self.notes_for(question, history)
        earlier = [turn.content for turn in history if turn.role == "user"][-1:]
        hits = self.index.search(" ".join([*earlier, question]), max(CANDIDATES, self.cfg.max_passages))
        relevant = [hit.note for hit in hits if is_emergency_note(hit.note.title)]
        titled = self.index.passages_titled(is_emergency_note, CANDIDATES)
        chosen: list[Note] = []
        used = 0
        for note in dict.fromkeys([*relevant, *titled, *general]):
            cost = note_tokens(note)
            if len(chosen) < self.cfg.max_passages and used + cost <= self.cfg.token_budget:
                chosen.append(note)
                used += cost
        return tuple(chosen)

    def gather(self, query: Query, context: Context) -> Context:
        """Add the notes for this question to its context (ContextSource)."""
        if query.emergency:
            notes = self.emergency_notes_for(query.decision.question, context.history)
        else:
            notes = self.notes_for(query.decision.question, context.history)
        with self._pending_lock:
            self._pending[query.query_id] = tuple(dict.fromkeys(note.title for note in notes))
            while len(self._pending) > _PENDING_MAX:
                self._pending.popitem(last=False)
        return dataclasses.replace(context, notes=notes)

    def answered(self, query: Query, question: str, answer: str) -> None:
        """Remember which notes this answer drew on, for the asker's next `!src` (ContextSource)."""
        with self._pending_lock:
            titles = self._pending.pop(query.query_id, ())
        node, channel = source_key(query)
        self.index.remember_source(node, channel, titles)

    def last_source(self, node: int, channel: int | None) -> str | None:
        """`!src`: the titles of the notes the last answer to (node, channel) drew on, fitting one fragment.

        `channel` is None for a DM. None when that asker has had no answer since the index was made,
        or when the last answer drew on no note (it came from the model alone).
        """
        titles = self.index.source_titles(node, channel)
        if not titles:
            return None
        return _fit_bytes(SOURCE_JOIN.join(titles), SOURCE_MAX_BYTES)


def knowledge_now(cfg: KnowledgeConfig, answers: AnswersConfig | None = None) -> KnowledgeSource | None:
    """The notes (and the reference) indexed in memory now, no background thread (`ask`, `eval`); None: both off."""
    reference = open_reference(answers, cfg.passage_bytes) if answers is not None else None
    if not cfg.active and reference is None:
        return None
    source = KnowledgeSource(KnowledgeIndex(":memory:", cfg.passage_bytes), cfg, reference)
    source.refresh()
    return source
