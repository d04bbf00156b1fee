"""A small, dependency-free guess at the language of a short question. Pure.

Enough to hand an asker the shipped reference in the language they asked in (English, Spanish,
German, French), or the nearest one it has (Spanish for Portuguese and Italian), and to say "I don't
know" in Portuguese, Italian and Russian too: function words and question words, plus a few letters
only one of them uses. Not a general language detector: anything it cannot tell is English.
"""

from __future__ import annotations

import re

FALLBACK = "en"
# Every language it can tell; the reference has folders for the first four.
ALL_LANGUAGES = ("en", "es", "de", "fr", "pt", "it", "ru")
# A language with no reference folder reads the one closest to it: a Portuguese or Italian asker understands
# Spanish better than English, and the search finds "número", "emergencia" and "Europa" in it.
NEAREST = {"pt": "es", "it": "es"}

# Words that give a language away in one short question; a word shared by two languages ("la",
# "de", "en") is left out, so each hit is a vote for one language only.
_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        """the is are what how when where who which why does do should can could my you your i it
        with after before and for from this that there much many long bite bitten about tell of to get
        have has need if or be was will please explain any""".split()
    ),
    "es": frozenset(
        """el los las es son qué cómo como cuál cual cuándo cuando dónde donde quién cuántos cuántas
        cuánto hay debo hacer puedo una unos por para con del al mi se si picadura mordedura
        agua herida quemadura""".split()
    ),
    "de": frozenset(
        """der die das ist sind was wie wann wo wer welche welcher welches warum und ein eine einen
        mit nach bei soll sollte kann ich man mein meine nicht auf für von zu im dem den des braucht brauche
        muss lange viele""".split()
    ),
    "fr": frozenset(
        """le les est sont quel quelle quels quelles comment quand où qui pourquoi combien et une
        avec pour dans du au je dois faire faut cas quoi mon ma mes ce cette sur par pas""".split()
    ),
    # Words Spanish and French do not share ("qual" is Portuguese and Italian alike).
    "pt": frozenset(
        """qual quais quantos quantas onde quem não é você uma em na nas da das ao isso meu minha
        tem são água fazer ajuda""".split()
    ),
    "it": frozenset(
        """qual è sono della delle degli dello gli cosa dove chi perché quanti quante fare
        aiuto acqua""".split()
    ),
}
# Letters (and the inverted marks) that belong to one of the four.
_LETTERS: dict[str, re.Pattern[str]] = {
    "es": re.compile(r"[ñ¿¡]"),
    "de": re.compile(r"[ßäöü]"),
    "fr": re.compile(r"[çèêëàâîïôûœù]"),
    "pt": re.compile(r"[ãõ]"),
}
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
# "qu'est-ce", "l'eau", "d'une": French elision.
_ELISION = re.compile(r"\b(?:qu|l|d|j|n|s|c)'[^\W\d_]", re.IGNORECASE)


def guess_language(text: str, known: tuple[str, ...] = ("en", "es", "de", "fr")) -> str:
    """The language of a short question among `known`; FALLBACK when nothing points elsewhere."""
    lowered = text.lower()
    if "ru" in known and len(_CYRILLIC.findall(lowered)) * 2 > len(re.findall(r"\w", lowered)):
        return "ru"
    scores = {lang: 0.0 for lang in known}
    for word in _WORD.findall(lowered):
        for lang in known:
            if word in _WORDS.get(lang, ()):
                scores[lang] += 1.0
    for lang, pattern in _LETTERS.items():
        if lang in scores:
            scores[lang] += 1.5 * len(pattern.findall(lowered))
    if "fr" in scores:
        scores["fr"] += 1.5 * len(_ELISION.findall(lowered))
    best = max(scores, key=lambda lang: scores[lang])
    if scores[best] <= 0:
        return FALLBACK if FALLBACK in known else known[0]
    # A tie between English and another language is usually a loan word: the other one wins.
    tied = [lang for lang in known if scores[lang] == scores[best]]
    return next((lang for lang in tied if lang != FALLBACK), best)


def nearest(lang: str, available: tuple[str, ...]) -> str | None:
    """`lang` when available, else the closest available language, else None."""
    if lang in available:
        return lang
    near = NEAREST.get(lang)
    return near if near in available else None
