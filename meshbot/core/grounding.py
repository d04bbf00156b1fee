"""Grounded answers: which questions need a source, whether an answer kept its passage's facts, and
the extractive answer built from the passage itself. Pure.

A small model told "the meeting is at 10:00" may still write "10:30". So the facts of an answer
(numbers, times, units, names) are compared with those of the passages it was given, after
normalising ("ten" is 10, "7:30 pm" is 19:30, "°F" is "f"). An answer that brings a fact the
passages do not hold, or that drops every fact of the passage's most relevant sentence, is not
sent: the passage's own sentences are, fitted to the budget and tagged with the note's title.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from meshbot.core.domain import Note
from meshbot.core.text import tidy, utf8_len

# -- which questions go to the model freely ----------------------------------------------------
# Greetings, thanks and questions about the bot itself: no facts to ground, the model may answer.
_CHAT = re.compile(
    r"""^\W*(?:
        (?:hi|hello|hey|yo|howdy|good\s+(?:morning|evening|afternoon|night)|thanks?(?:\s+you)?|thank\s+you|
           cheers|bye|goodbye|ok(?:ay)?|cool|nice|great|
           hola|buenos\s+d[ií]as|buenas(?:\s+noches|\s+tardes)?|gracias|adi[oó]s|
           hallo|guten\s+(?:morgen|tag|abend)|servus|moin|danke(?:\s+sch[oö]n)?|tsch[uü]ss|
           bonjour|bonsoir|salut|merci(?:\s+beaucoup)?|au\s+revoir)\b[\W\w]{0,20}$
      | (?:how\s+are\s+you|how\s+is\s+it\s+going|what'?s\s+up|who\s+are\s+you|what\s+are\s+you|
           what\s+is\s+your\s+name|what'?s\s+your\s+name|are\s+you\s+(?:a\s+)?(?:bot|robot|ai|human|real)|
           what\s+can\s+you\s+do|tell\s+me\s+about\s+yourself|
           c[oó]mo\s+est[aá]s|qui[eé]n\s+eres|qu[eé]\s+eres|c[oó]mo\s+te\s+llamas|
           wie\s+geht'?s|wie\s+geht\s+es\s+dir|wer\s+bist\s+du|was\s+bist\s+du|wie\s+hei[sß]+t\s+du|
           comment\s+(?:[cç]a\s+va|vas[-\s]tu|allez[-\s]vous)|qui\s+es[-\s]tu|tu\s+es\s+qui|
           comment\s+tu\s+t'appelles)\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def is_chat(question: str) -> bool:
    """True for small talk and questions about the bot: they need no source."""
    return _CHAT.search(question.strip()) is not None


# Questions about a local place, person or event ("Where is the repeater?", "Who runs the net?", "When is the
# next meetup?"): the shipped reference holds none, so only the operator's notes may answer them.
_LOCAL_ASK = re.compile(
    r"""^\W*(?:where\s+(?:is|are|do\s+we|'s)|where's|who\s+(?:is|runs|looks\s+after|manages|maintains|owns)|
        when\s+(?:is|are|does)\s+the|dónde\s+(?:está|están|es|queda)|quién\s+(?:es|cuida|lleva|mantiene)|
        cuándo\s+es|wo\s+(?:ist|steht|sind|liegt|treffen)|wer\s+(?:ist|betreut|kümmert)|wann\s+ist|
        où\s+(?:est|sont|se\s+trouve)|qui\s+(?:est|s'occupe|gère)|quand\s+(?:est|a\s+lieu))\b""",
    re.IGNORECASE | re.VERBOSE,
)
# A name in the question (a capitalised word, not opening a sentence): "Willow Creek", "Pine Ridge"; not an
# acronym or a word written in mixed case ("UTF-8", "LoRa").
_QUESTION_NAME = re.compile(r"(?<=[^\s.!?¿¡:;] )([A-ZÁÉÍÓÚÑÀÈÙÂÊÎÔÛÇÄÖÜ][a-záéíóúñàèùâêîôûçäöüß]+)\b(?![-'][A-Z])")


# "Our channel", "nuestro repetidor", "unser Treffen", "notre relais": the asker's own community.
# Not "our conversation" with the bot: that is a question about the bot, which the reference answers.
_OURS = re.compile(
    r"\b(?:our|ours|nuestr[oa]s?|unser(?:e|er|em|en|es)?|notre)\b"
    r"(?!\s+(?:conversation|chat|talk|conversación|charla|gespräch|unterhaltung|discussion)\b)",
    re.IGNORECASE,
)


def asks_local(question: str) -> bool:
    """True for a question about a local place, person or event, which only the operator's notes can answer."""
    return _LOCAL_ASK.search(question.strip()) is not None or _OURS.search(question) is not None


def question_names(question: str) -> list[str]:
    """The capitalised words of a question past its first (names of places and people, in most languages)."""
    return [m.group(1) for m in _QUESTION_NAME.finditer(question.strip())]


# -- facts -----------------------------------------------------------------------------------
_NUMBER_WORDS = {
    # en, es, de, fr: enough for what safety and radio answers count
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "hundred": 100,
    "cero": 0, "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8,
    "nueve": 9, "diez": 10, "veinte": 20, "treinta": 30, "cien": 100,
    "null": 0, "eins": 1, "zwei": 2, "drei": 3, "vier": 4, "fünf": 5, "sechs": 6, "sieben": 7, "acht": 8,
    "neun": 9, "zehn": 10, "zwanzig": 20, "dreißig": 30, "hundert": 100,
    "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "sept": 7, "huit": 8, "neuf": 9, "dix": 10,
    "vingt": 20, "trente": 30, "cent": 100,
}  # fmt: skip
_TIME = re.compile(r"\b([01]?\d|2[0-3])[:.h]([0-5]\d)\s*(am|pm|a\.m\.|p\.m\.)?(?!\d)", re.IGNORECASE)
_CLOCK = re.compile(r"\b(1[0-2]|0?[1-9])\s*(am|pm|a\.m\.|p\.m\.)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.,])(\d+(?:[.,]\d+)?)(?:\s*(°\s*[cf]|%|percent|por\s*ciento|prozent|pour\s*cent))?", re.I)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# A capitalised word inside a sentence (not its first word): a name, in languages that do not
# capitalise every noun. German does, so its names are not compared.
_NAME = re.compile(r"(?<=[\w,;:)] )([A-ZÁÉÍÓÚÑÀÈÌÒÙÂÊÎÔÛÇ][\w'-]{2,})")
_NO_NAMES = frozenset({"de"})


def _hour(h: int, suffix: str | None) -> int:
    suffix = (suffix or "").lower().replace(".", "")
    if suffix == "pm" and h < 12:
        return h + 12
    if suffix == "am" and h == 12:
        return 0
    return h


def facts(text: str, lang: str = "en") -> set[str]:
    """The normalised facts of a text: times ("t19:30"), numbers with unit ("n35", "n35f"), names ("xheron")."""
    found: set[str] = set()
    rest = text
    for m in _TIME.finditer(text):
        found.add(f"t{_hour(int(m.group(1)), m.group(3)):02d}:{m.group(2)}")
    rest = _TIME.sub(" ", rest)
    for m in _CLOCK.finditer(rest):
        found.add(f"t{_hour(int(m.group(1)), m.group(2)):02d}:00")
    rest = _CLOCK.sub(" ", rest)
    for m in _NUMBER.finditer(rest):
        value = m.group(1).replace(",", ".")
        value = value.rstrip("0").rstrip(".") if "." in value else value
        unit = (m.group(2) or "").lower().replace(" ", "").replace("°", "")
        unit = "%" if unit and unit[0] in "%pp" and unit not in ("c", "f") else unit
        found.add(f"n{value}{unit}")
        if unit:
            found.add(f"n{value}")  # "35 °C" also states the bare 35
    for word in _WORD.findall(rest.lower()):
        if word in _NUMBER_WORDS:
            found.add(f"n{_NUMBER_WORDS[word]}")
    if lang not in _NO_NAMES:
        found |= {f"x{m.group(1).lower()}" for m in _NAME.finditer(rest)}
    return found


def _known(word: str, words: set[str]) -> bool:
    """True when `word` or a word of its stem ("tuesdays", "tuesday") is among `words`."""
    stem = _stem(word)
    return word in words or any(w.startswith(stem) or word.startswith(_stem(w)) for w in words if len(w) > 3)


def _same_fact(a: str, b: str) -> bool:
    """Two facts that say the same: equal, the same number (unit or not), or names of one stem."""
    if a[0] != b[0]:
        return False
    if a[0] == "x":
        return _known(a[1:], {b[1:]})
    return a == b or _bare(a) == _bare(b)


def _bare(fact: str) -> str:
    """A number fact without its unit: "n35f" -> "n35"."""
    return re.sub(r"^(n[\d.]+).*$", r"\1", fact)


# Share of an answer's content words found nowhere in its passages or question above which it is
# the model's own writing rather than the passage's, and the passage's sentences go out instead.
MAX_UNSUPPORTED = 0.3


@dataclass(frozen=True)
class FactCheck:
    """How an answer compares with its passages: facts it brought in or dropped, words of its own."""

    invented: frozenset[str]
    dropped: frozenset[str]
    unsupported: float = 0.0  # share of the answer's content words not in the passages or question

    too_short: bool = False  # a bare figure ("3.") or word: the passage's sentence says it better

    @property
    def ok(self) -> bool:
        """True when the answer may go on air as the model wrote it."""
        return not self.invented and not self.dropped and not self.too_short and self.unsupported <= MAX_UNSUPPORTED


def unsupported_share(answer: str, sources: Sequence[str], stopwords: frozenset[str] = frozenset()) -> float:
    """The share of the answer's content words (four letters or more) whose stem no source has, less one."""
    known = {w for text in sources for w in _WORD.findall(text.lower())}
    words = [w for w in _WORD.findall(answer.lower()) if len(w) >= 4 and w not in stopwords]
    if not words:
        return 0.0
    # One word of its own ("runs" in "Dario runs the net") is forgiven: a short answer needs a verb.
    return max(0, sum(not _known(w, known) for w in words) - 1) / len(words)


def check_facts(
    answer: str,
    passages: Sequence[str],
    question: str,
    key_sentence: str,
    lang: str = "en",
    stopwords: frozenset[str] = frozenset(),
) -> FactCheck:
    """Compare the answer's facts with the passages' (and the question's, which the asker said)."""
    allowed = facts(question, lang)
    for passage in passages:
        allowed |= facts(passage, lang)
    words = {w.lower() for p in (*passages, question) for w in _WORD.findall(p)}
    said = facts(answer, lang)
    allowed_bare = {_bare(a) for a in allowed}
    invented = {
        f
        for f in said
        if f not in allowed
        and not (f.startswith("n") and f == _bare(f) and f in allowed_bare)
        and not (f.startswith("x") and _known(f[1:], words))
    }
    # The answer must state at least one fact of the sentence that answers the question (if it has any).
    key = facts(key_sentence, lang) - facts(question, lang)
    # A name may open the answer's sentence ("Dario runs it"), where `facts` does not see it as one.
    said_words = said | {"x" + w for w in _WORD.findall(answer.lower())}
    dropped = frozenset() if not key or any(_same_fact(k, f) for k in key for f in said_words) else frozenset(key)
    opening = sentences(passages[0])[0] if passages and sentences(passages[0]) else ""
    dropped |= _dropped_verdict(key_sentence, answer) | _dropped_verdict(opening, answer)
    dropped |= _dropped_negation(key_sentence, answer) | _dropped_labels(key_sentence, answer)
    unsupported = unsupported_share(answer, (*passages, question), stopwords)
    too_short = len(_WORD.findall(answer)) < MIN_ANSWER_WORDS
    return FactCheck(frozenset(invented), dropped, unsupported, too_short)


# An answer needs words: "3." for "how long should water be boiled?" keeps a figure of the passage and drops
# what it counts (1 minute, or 3 above 2,000 m).
MIN_ANSWER_WORDS = 2
# A passage sentence that opens with a verdict ("No. Meshtastic nodes talk by radio ...") answers a yes/no
# question: an answer without that verdict has dropped the fact that matters.
_VERDICT = re.compile(r"^\W*(no|nein|non|yes|ja|oui|s[ií])\s*[.,!:;]", re.IGNORECASE)  # not "No one", "Si la"


def _dropped_verdict(key_sentence: str, answer: str) -> frozenset[str]:
    """{"v:no"} when the key sentence opens with a yes/no verdict the answer does not say."""
    m = _VERDICT.match(key_sentence)
    if m is None:
        return frozenset()
    verdict = m.group(1).lower()
    said = re.search(rf"\b{verdict}\b", answer, re.IGNORECASE) is not None
    return frozenset() if said else frozenset({f"v:{verdict}"})


# "Meshtastic has no standard emergency channel": an answer without any negation ("The emergency channel is 0")
# says the opposite of its sentence.
_NEGATION = re.compile(
    r"\b(?:no|not|never|none|nobody|nothing|nein|nicht|kein(?:e[nmrs]?)?|nie|niemals|non|pas|jamais|aucun(?:e)?|"
    r"ningun[oa]?|ningún|nunca|nada|nadie)\b|n't\b",
    re.IGNORECASE,
)


def _dropped_negation(key_sentence: str, answer: str) -> frozenset[str]:
    """{"v:not"} when the key sentence denies something and the answer denies nothing."""
    if _NEGATION.search(key_sentence) and not _NEGATION.search(answer):
        return frozenset({"v:not"})
    return frozenset()


# Steps a passage names with a label ("Rest: stop ...", "Hielo: pon ..."): an answer keeping none of them
# ("Para y no apoyes el tobillo") dropped what the steps are.
_LABEL = re.compile(r"(?:^|[.,;]\s*)([^\W\d_]{3,}):\s", re.UNICODE)


def _dropped_labels(key_sentence: str, answer: str) -> frozenset[str]:
    """{"l:rest", ...} when the key sentence labels steps and the answer names none of them."""
    labels = {m.group(1).lower() for m in _LABEL.finditer(key_sentence)}
    said = {w.lower() for w in _WORD.findall(answer)}
    if not labels or any(_known(label, said) for label in labels):
        return frozenset()
    return frozenset(f"l:{label}" for label in labels)


# -- extractive answers ------------------------------------------------------------------------
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_SKIP_LINE = re.compile(r"^\s*(?:source|sources|checked|fuente|quelle|geprüft|vérifié|revisado)\b", re.IGNORECASE)


def sentences(text: str) -> list[str]:
    """The sentences of a passage, markdown tidied away, each on one line."""
    out = []
    for paragraph in _PARAGRAPH.split(text):
        # Notes are often wrapped at a fixed width: a line break inside a paragraph is a space.
        lines = [line for line in paragraph.splitlines() if not line.lstrip().startswith("#")]
        for raw in _SENTENCE.split(" ".join(lines)):
            line = " ".join(tidy(raw).split())
            if line and _WORD.search(line):
                out.append(line)
    return out


def _stem(word: str) -> str:
    return word[: max(4, len(word) - 3)] if len(word) > 4 else word


def _overlap(sentence: str, stems: set[str]) -> int:
    return len({_stem(w) for w in _WORD.findall(sentence.lower())} & stems)


def question_stems(question: str, stopwords: frozenset[str] = frozenset()) -> set[str]:
    """Stems of the question's telling words (words of three letters or more, not stopwords)."""
    return {_stem(w) for w in _WORD.findall(question.lower()) if len(w) > 2 and w not in stopwords}


def ranked_sentences(
    question: str, notes: Sequence[Note], stopwords: frozenset[str] = frozenset()
) -> list[tuple[int, int, int, str]]:
    """(score, note index, position, sentence) for every usable sentence of the notes, best first."""
    stems = question_stems(question, stopwords)
    scored = []
    for n, note in enumerate(notes):
        for i, sentence in enumerate(sentences(note.text)):
            if _SKIP_LINE.match(sentence):
                continue
            # Earlier notes rank higher (they matched better). The best note's first sentence counts as much
            # as one shared word: a passage's heading matched the question, and its first line is its point.
            score = 4 * _overlap(sentence, stems) - 2 * n + (4 if n == 0 and i == 0 else 0)
            scored.append((score, n, i, sentence))
    scored.sort(key=lambda s: (-s[0], s[1], s[2]))
    return scored


def key_sentence(question: str, notes: Sequence[Note], stopwords: frozenset[str] = frozenset()) -> str:
    """The sentence of the notes that answers the question best; "" when there are none."""
    ranked = ranked_sentences(question, notes, stopwords)
    return ranked[0][3] if ranked else ""


def short_title(note: Note) -> str:
    """A note's title as a tag: its top heading up to a colon ("Bleeding"), else its file name."""
    parts = note.title.split(" > ")
    if len(parts) > 1:
        return parts[1].split(":", 1)[0].strip()
    stem = re.sub(r"\.(md|markdown|txt)$", "", parts[0], flags=re.IGNORECASE)
    return stem.replace("-", " ").replace("_", " ").strip().capitalize()


# Sentences an extractive answer takes at most: the best one and the one after it.
EXTRACT_SENTENCES = 2


def extractive(
    question: str,
    notes: Sequence[Note],
    budget_bytes: int,
    stopwords: frozenset[str] = frozenset(),
    whole_bytes: int | None = None,
) -> str:
    """The notes' most relevant sentences, in their order, within `budget_bytes`, tagged with the title.

    `whole_bytes`: the room used instead when the best sentence alone does not fit `budget_bytes`
    (one fragment's text is the budget; all of the answer's fragments are the whole).
    """
    # The best passage only (retrieval ranked it first): its best sentence, and the one after it.
    ranked = ranked_sentences(question, notes[:1], stopwords)
    if not ranked:
        return ""
    tag = f"{short_title(notes[0])}: "
    best_i = ranked[0][2]
    pair = [ranked[0], *(r for r in ranked if r[2] == best_i + 1)][:EXTRACT_SENTENCES]
    room = budget_bytes - utf8_len(tag)
    if whole_bytes is not None and utf8_len(" ".join(r[3] for r in pair)) > room:
        room = whole_bytes - utf8_len(tag)  # too long for one fragment: take the fragments it needs
    chosen: list[tuple[int, int, str]] = []
    used = 0
    for _, n, i, sentence in pair:
        cost = utf8_len(sentence) + (1 if chosen else 0)
        if used + cost > room:
            break
        chosen.append((n, i, sentence))
        used += cost
    if not chosen:  # even the best sentence is longer than the room: cut it at a word
        cut = ""
        for word in ranked[0][3].split():
            if utf8_len(f"{cut} {word}…") > room:
                break
            cut = f"{cut} {word}".strip()
        return f"{tag}{cut}…"
    chosen.sort()
    return tag + " ".join(sentence for _, _, sentence in chosen)
