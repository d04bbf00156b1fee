"""The shipped offline reference (first aid, outdoor safety, Meshtastic use) as a knowledge source.

It sits beside the operator's notes: `KnowledgeSource` searches both. The reference comes in one
folder per language (`en/`, `es/`, ...); a question is searched in the folder of the language it
was asked in (`core.language`), English when that language has none. Each folder gets its own small
in-memory index, built once at start (the reference is read-only and a few dozen KB).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from meshbot.core.config import AnswersConfig
from meshbot.core.events import Event
from meshbot.core.grounding import asks_local, question_names
from meshbot.core.language import ALL_LANGUAGES, FALLBACK, guess_language, nearest
from meshbot.reference import FOLDER
from meshbot.storage.knowledge import Hit, KnowledgeIndex, covered, needed_cover, note_files, query_words

log = logging.getLogger(__name__)

SHIPPED = FOLDER
# A folder of notes for every language (no <lang>/ subfolders) is indexed under this key.
ANY = "*"


def _language_folders(root: Path) -> dict[str, Path]:
    """{lang: folder}: the two-letter subfolders of `root`, or `root` itself for every language."""
    subs = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and len(p.name) == 2 and p.name.isalpha()}
    return subs or {ANY: root}


class Reference:
    """The reference notes per language, searched in the asker's language."""

    def __init__(self, root: Path, passage_bytes: int = 600) -> None:
        self.root = root
        self.indexes: dict[str, KnowledgeIndex] = {}
        for lang, folder in _language_folders(root).items():
            index = KnowledgeIndex(":memory:", passage_bytes)
            report = index.sync([folder])
            self.indexes[lang] = index
            log.debug("reference %s: %d file(s), %d passages", lang, report.indexed, report.passages)
        files = sum(index.counts()[0] for index in self.indexes.values())
        log.info(
            "reference loaded from %s: %d file(s) in %s",
            root,
            files,
            ", ".join(sorted(self.indexes)),
            extra={"event": Event.KNOWLEDGE_INDEXED, "files": files},
        )

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the reference has a folder for."""
        return tuple(lang for lang in self.indexes if lang != ANY)

    def language_of(self, question: str) -> str:
        """The folder a question is answered from: its language when the reference has it, else English."""
        if ANY in self.indexes:
            return ANY
        found = nearest(guess_language(question, ALL_LANGUAGES), self.languages)
        if found is not None:
            return found
        return FALLBACK if FALLBACK in self.indexes else self.languages[0]

    def search(self, question: str, limit: int, lang: str | None = None) -> list[Hit]:
        """The best passages for a question in its language's folder (`lang` overrides the guess)."""
        lang = lang or self.language_of(question)
        index = self.indexes.get(lang)
        if index is None or asks_local(question):
            return []
        # A name the passage does not hold ("the Willow Creek repeater") is a local thing the reference cannot know.
        names = [name.lower() for name in question_names(question)] if lang != "de" else []  # German: every noun
        # Stricter than the operator's notes: the reference covers everything a little, so a question about a
        # place it cannot know ("Who looks after the Pine Ridge node?") must not match "look after" a patient.
        words = query_words(question)
        need = max(needed_cover(words), math.ceil(len(words) / 2), min(2, len(words)))
        found = []
        for hit in index.search(question, limit):
            text = f"{hit.note.title} {hit.note.text}"
            if covered(words, text) >= need and all(name in text.lower() for name in names):
                found.append(hit)
        if len(words) == 1:
            # One telling word ("What is a radio?") is found in passing everywhere ("a handheld radio does not
            # attract lightning"): only a passage whose heading names it is about it.
            found = [hit for hit in found if covered(words, hit.note.title) >= 1]
        return found

    def close(self) -> None:
        """Close the indexes."""
        for index in self.indexes.values():
            index.close()


def reference_root(cfg: AnswersConfig) -> Path | None:
    """The reference folder `[answers]` asks for; None when the reference is off or missing (logged)."""
    if not cfg.reference:
        return None
    root = Path(cfg.reference_path).expanduser() if cfg.reference_path else SHIPPED
    if not root.is_dir() or next(note_files([root]), None) is None:
        log.warning(
            "reference folder %s has no notes: answering without the reference",
            root,
            extra={"event": Event.KNOWLEDGE_ERROR},
        )
        return None
    return root


def open_reference(cfg: AnswersConfig, passage_bytes: int = 600) -> Reference | None:
    """The reference `[answers]` asks for, indexed; None when off or empty."""
    root = reference_root(cfg)
    return Reference(root, passage_bytes) if root is not None else None
