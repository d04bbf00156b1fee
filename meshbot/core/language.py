"""A small, dependency-free guess at the language of a short question. Pure.

Enough to hand an asker the shipped reference in the language they asked in (English, Spanish,
German, French): function words and question words, plus a few letters only one of them uses.
Not a general language detector: anything it cannot tell is English, the reference's fallback.
"""

from __future__ import annotations

import re

FALLBACK = "en"

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
}
# Letters (and the inverted marks) that belong to one of the four.
_LETTERS: dict[str, re.Pattern[str]] = {
    "es": re.compile(r"[ñ¿¡]"),
    "de": re.compile(r"[ßäöü]"),
    "fr": re.compile(r"[çèêëàâîïôûœù]"),
}
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
# "qu'est-ce", "l'eau", "d'une": French elision.
_ELISION = re.compile(r"\b(?:qu|l|d|j|n|s|c)'[^\W\d_]", re.IGNORECASE)


def guess_language(text: str, known: tuple[str, ...] = ("en", "es", "de", "fr")) -> str:
    """The language of a short question among `known`; FALLBACK when nothing points elsewhere."""
    lowered = text.lower()
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
