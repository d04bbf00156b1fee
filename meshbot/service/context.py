"""Context sources: what each question's prompt gets besides the question, and what they learn from answers.

Conversation memory gives history, the knowledge index gives notes, the asker's node gives a name and a
hop count. Each is a `ContextSource`; the worker asks all of them before generating (`gather`) and tells
them the answer after (`answered`). `app.compose` decides which sources a daemon has.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from meshbot.core.domain import Asker, Context
from meshbot.core.prompting import clean_name
from meshbot.service.queueing import Query

log = logging.getLogger(__name__)


class ContextSource(Protocol):
    """One contributor to a question's prompt."""

    def gather(self, query: Query, context: Context) -> Context:
        """Return `context` with this source's part added (dataclasses.replace)."""

    def answered(self, query: Query, question: str, answer: str) -> None:
        """Learn from a finished answer (store a turn, remember a note's title)."""


class Contexts:
    """All of a daemon's context sources, asked in order; a failing source is logged and skipped."""

    def __init__(self, sources: Sequence[ContextSource] = ()) -> None:
        self.sources = tuple(sources)

    def gather(self, query: Query) -> Context:
        """The context for one question."""
        context = Context()
        for source in self.sources:
            try:
                context = source.gather(query, context)
            except Exception:  # a broken index or memory must not stop the answer
                log.exception("context source %s failed for q%d", type(source).__name__, query.query_id)
        return context

    def answered(self, query: Query, question: str, answer: str) -> None:
        """Tell every source how a question was answered."""
        for source in self.sources:
            try:
                source.answered(query, question, answer)
            except Exception:
                log.exception("context source %s failed after q%d", type(source).__name__, query.query_id)

    def regenerates_alike(self, query: Query) -> bool:
        """Whether the question, asked again after a restart, gets the prompt state its first generation had.

        A source that cannot tell (it raised) counts as not alike: the resumed answer then ends from what is
        stored rather than risk splicing two different texts.
        """
        for source in self.sources:
            alike = getattr(source, "regenerates_alike", None)
            if alike is None:
                continue
            try:
                if not alike(query):
                    return False
            except Exception:
                log.exception("context source %s failed for q%d on resume", type(source).__name__, query.query_id)
                return False
        return True

    def close(self) -> None:
        """Release what the sources hold (an index, a background thread): at daemon stop."""
        for source in self.sources:
            close = getattr(source, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception:
                log.exception("context source %s failed to close", type(source).__name__)


class AskerSource:
    """Who asks: the hops the question travelled, and the node's short name if the radio knows it."""

    def __init__(self, short_name_of: Callable[[int], str | None] | None = None) -> None:
        self._short_name_of = short_name_of

    def gather(self, query: Query, context: Context) -> Context:
        """Add the cleaned, bounded name and the hop count."""
        raw = self._short_name_of(query.node) if self._short_name_of is not None else None
        return dataclasses.replace(context, asker=Asker(clean_name(raw), query.inbound.hops))

    def answered(self, query: Query, question: str, answer: str) -> None:
        """Nothing to learn."""
