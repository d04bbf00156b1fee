"""The knowledge index: the operator's note files as passages in SQLite FTS5, ranked by BM25.

Why its own SQLite file rather than tables in the store: the index is a cache of files the operator
owns and can be rebuilt from them at any time (deleting it is always safe); it may grow to tens of
MB that have no place in the store's backups or its WAL; and its writes (a whole folder at start-up)
must not hold up the store, which every accepted question is written to first. The one thing in it
that is not rebuilt from the files, which notes each asker's last answer drew on (for `!src`), is
small, bounded, and worthless after a restart anyway.

One connection behind a lock: the indexer commits file by file, so a question waits at most for
one file's insert, never for the whole folder.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshbot.core.domain import Note
from meshbot.core.passages import TITLE_SEPARATOR, Passage, split_passages

log = logging.getLogger(__name__)

NOTE_SUFFIXES = frozenset({".md", ".markdown", ".txt"})
# Remembered `!src` answers: the newest this many (node, channel) pairs.
MAX_REMEMBERED_SOURCES = 2000
# Words too common to say what a question is about (English, Spanish, German, French, and the commonest of
# Portuguese and Italian): a question made only of these finds nothing rather than whatever passage mentions
# "what" most.
STOPWORDS = frozenset(
    """a an and are as at be but by can could did do does for from had has have how i if in is it its me
    my no not of on or our so that many much per the their then there these this to was we were what when where which who
    whom why will with would you your about any some there's it's i'm please tell know should shall someone somebody
    el la los las un una unos de del y o que en es por para con como cual cuando donde qué cómo cuál cuándo
    dónde se su al lo
    der die das ein eine und oder ist sind wie was wann wo wer mit von zu im in den dem des auf für
    le les une et ou est sont comment quand où qui quoi avec pour dans du au ce sur par pas
    qual quais na nas em um uma ao os da das é il di della che è per non""".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 24

# The index is a cache of the files: a file of another layout is emptied and rebuilt, never migrated.
SCHEMA_VERSION = 3
_DROP = "DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS passages; DROP TABLE IF EXISTS last_source;"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5(
    heading, body, title UNINDEXED, path UNINDEXED, tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS last_source (
    node INTEGER NOT NULL, channel INTEGER NOT NULL, titles TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (node, channel)
);
"""
# A passage's own heading counts more than its body: it says what the passage is about. Only its own:
# the file's top heading ("Greenfield mesh") would make every passage of the file match its name.
_SEARCH = """
SELECT title, body, bm25(passages, 3.0, 1.0) AS score FROM passages
WHERE passages MATCH ? ORDER BY score LIMIT ?
"""
# last_source keys a DM (no channel) as this channel number.
_DM_CHANNEL = -1


@dataclass(frozen=True)
class Hit:
    """A passage found for a question; `score` is FTS5's bm25 (lower is better)."""

    note: Note
    score: float


@dataclass(frozen=True)
class SyncReport:
    """What one pass over the note folders changed."""

    indexed: int = 0  # files (re)indexed
    dropped: int = 0  # files gone from disk, removed from the index
    unchanged: int = 0
    passages: int = 0  # passages written
    failed: int = 0  # files that could not be read


def query_words(question: str) -> list[str]:
    """The telling words of a question: lower case, no stopwords, no repeats, at most MAX_QUERY_WORDS."""
    words: list[str] = []
    for word in _WORD.findall(question.lower()):
        if len(word) < 2 or word in STOPWORDS or word in words:
            continue
        words.append(word)
    return words[:MAX_QUERY_WORDS]


# "What should I do for heat stroke?" asks for the treatment, and its telling words ("heat stroke") are said
# more often in the passage on the signs. Notes head their treatment sections with these words ("How to treat
# heat stroke", "Cómo tratar", "behandeln", "Comment traiter"): they rank a question asking what to do, and only
# rank (a passage need not contain them to be found).
_ASKS_WHAT_TO_DO = re.compile(
    r"""\bwhat\b.*\bdo\b|\bhow\b.*\b(?:help|treat|handle|care)\b|\bfirst\s+aid\b|
        qu[eé]\s+(?:hago|hacer|debo|hay\s+que)|c[oó]mo\s+(?:ayud|trat|atiend|atender|cur)|
        \bwas\s+(?:tun|mache|macht|soll|sollte|muss)\b|\bwie\s+(?:helfe|hilft|behandl)|
        \bque\s+faire\b|\bque\s+dois|\bcomment\s+(?:aider|traiter|soigner)""",
    re.IGNORECASE | re.VERBOSE,
)
TREATMENT_WORDS = ("treat", "tratar", "behandeln", "traiter")


def match_expression(question: str) -> str | None:
    """The FTS5 query for a question: its telling words, OR-ed; None when it has none."""
    words = query_words(question)
    if words and _ASKS_WHAT_TO_DO.search(question):
        words = [*words, *(w for w in TREATMENT_WORDS if w not in words)]
    # Quoted, so a word like NEAR or AND is a word, not an operator.
    return " OR ".join(f'"{w}"' for w in words) if words else None


def _shares_stem(word: str, present: set[str]) -> bool:
    # Crude but language-blind: "boiling" and "boiled" share "boil"; a short word must match whole.
    if word in present or len(word) <= 4:
        return word in present
    stem = word[: max(4, len(word) - 3)]
    return any(p.startswith(stem) for p in present)


def fold(text: str) -> str:
    """Lower case without accents, as the index's tokenizer (remove_diacritics) sees words."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def covered(words: Sequence[str], text: str) -> int:
    """How many of the question's words (by stem, accents aside: "emergência" is "emergencia") a passage has."""
    present = set(_WORD.findall(fold(text)))
    return sum(_shares_stem(fold(w), present) for w in words)


def needed_cover(words: Sequence[str]) -> int:
    """Words a passage must share with a question to count as relevant: two once the question has four."""
    # One shared word in a long question ("minute" in a CPR question meeting a note on boiling water)
    # is chance, not relevance; a short question ("weekly net") may match on one.
    return 1 if len(words) <= 3 else 2


def _warn_missing(root: Path) -> None:
    log.warning("knowledge path %s is not a folder or file: skipped", root)


def note_files(paths: Iterable[str | Path], on_missing: Callable[[Path], None] = _warn_missing) -> Iterator[Path]:
    """Every note file under the given folders (or the files themselves), in a stable order."""
    for root in paths:
        root = Path(root).expanduser()
        if root.is_file():
            yield root
            continue
        if not root.is_dir():
            on_missing(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if Path(name).suffix.lower() in NOTE_SUFFIXES and not name.startswith("."):
                    yield Path(dirpath) / name


class KnowledgeIndex:
    """Passages of note files in FTS5: sync with the folders, search by BM25, remember `!src` titles."""

    def __init__(self, path: str = ":memory:", passage_bytes: int = 600) -> None:
        self.path = path
        self.passage_bytes = passage_bytes
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._seq = 0
        # Paths found missing at the last sync: said once, not at every sync (every 30 s), until they come back.
        self._missing: set[Path] = set()
        with self._lock:
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            if self._db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._db.executescript(_DROP)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM last_source").fetchone()
            self._seq = int(row[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- keeping the index in step with the files ---------------------------------------------
    def sync(self, paths: Sequence[str | Path], should_stop: threading.Event | None = None) -> SyncReport:
        """Index new and changed files (by mtime and size), drop files no longer there."""
        known = self._known_files()
        seen: set[str] = set()
        indexed = unchanged = passages = failed = 0
        missing: set[Path] = set()
        for file in note_files(paths, missing.add):
            if should_stop is not None and should_stop.is_set():
                break
            key = str(file.resolve())
            seen.add(key)
            try:
                stat = file.stat()
                if known.get(key) == (stat.st_mtime_ns, stat.st_size):
                    unchanged += 1
                    continue
                text = file.read_bytes().decode("utf-8", errors="replace")
            except OSError as exc:
                log.warning("cannot read note file %s: %s", file, exc)
                failed += 1
                continue
            parts = split_passages(text, file.name, self.passage_bytes)
            self._replace_file(key, stat.st_mtime_ns, stat.st_size, parts)
            indexed += 1
            passages += len(parts)
        for root in sorted(missing - self._missing):
            _warn_missing(root)
        self._missing = missing
        stopped = should_stop is not None and should_stop.is_set()
        gone = [] if stopped else [path for path in known if path not in seen]
        for path in gone:
            self._replace_file(path, None, None, [])
        return SyncReport(indexed, len(gone), unchanged, passages, failed)

    def _known_files(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            rows = self._db.execute("SELECT path, mtime_ns, size FROM files").fetchall()
        return {path: (mtime, size) for path, mtime, size in rows}

    def _replace_file(self, path: str, mtime_ns: int | None, size: int | None, parts: list[Passage]) -> None:
        """One transaction per file: a search sees the old passages or the new ones, never a mix."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM passages WHERE path = ?", (path,))
                self._db.execute("DELETE FROM files WHERE path = ?", (path,))
                if mtime_ns is not None:
                    self._db.executemany(
                        "INSERT INTO passages (heading, body, title, path) VALUES (?, ?, ?, ?)",
                        [(p.title.rsplit(TITLE_SEPARATOR, 1)[-1], p.text, p.title, path) for p in parts],
                    )
                    self._db.execute("INSERT INTO files VALUES (?, ?, ?)", (path, mtime_ns, size))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- questions ----------------------------------------------------------------------------
    def search(self, question: str, limit: int) -> list[Hit]:
        """The best `limit` passages for a question, best first; [] when nothing matches."""
        words = query_words(question)
        expression = match_expression(question)
        if expression is None or limit < 1:
            return []
        with self._lock:
            rows = self._db.execute(_SEARCH, (expression, limit)).fetchall()
        need = needed_cover(words)
        return [
            Hit(Note(title, body), score) for title, body, score in rows if covered(words, f"{title} {body}") >= need
        ]

    def passages_titled(self, keep: Callable[[str], bool], limit: int) -> list[Note]:
        """Passages whose title (path and heading) `keep` accepts, in index order, at most `limit`."""
        with self._lock:
            rows = self._db.execute("SELECT title, body FROM passages").fetchall()
        return [Note(title, body) for title, body in rows if keep(title)][:limit]

    def counts(self) -> tuple[int, int]:
        """(files, passages) in the index."""
        with self._lock:
            files = self._db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            passages = self._db.execute("SELECT COUNT(*) FROM passages").fetchone()[0]
        return int(files), int(passages)

    # -- what the last answer drew on ---------------------------------------------------------
    def remember_source(self, node: int, channel: int | None, titles: Sequence[str]) -> None:
        """Keep the note titles an answer to (node, channel) drew on; only the newest pairs are kept."""
        key = _DM_CHANNEL if channel is None else channel
        with self._lock:
            self._seq += 1
            self._db.execute(
                "INSERT OR REPLACE INTO last_source VALUES (?, ?, ?, ?)", (node, key, "\n".join(titles), self._seq)
            )
            self._db.execute("DELETE FROM last_source WHERE seq <= ?", (self._seq - MAX_REMEMBERED_SOURCES,))

    def source_titles(self, node: int, channel: int | None) -> list[str] | None:
        """The titles remembered for (node, channel): None if never asked, [] if no note was used."""
        key = _DM_CHANNEL if channel is None else channel
        with self._lock:
            row = self._db.execute(
                "SELECT titles FROM last_source WHERE node = ? AND channel = ?", (node, key)
            ).fetchone()
        if row is None:
            return None
        return [t for t in row[0].split("\n") if t]
