"""The shipped offline reference: short first-aid, outdoor-safety and Meshtastic notes in en, es, de, fr.

One folder per language (`en/`, `es/`, ...), the same topic file names in each, so an asker can be given the
reference in the language they asked in. Each note names its sources, the month its guidance was checked, and
that it is no substitute for emergency services. Shipped as package data like the example notes.
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
# The languages the reference is written in; each is a folder of FOLDER.
LANGUAGES = ("en", "es", "de", "fr")


def language_folder(lang: str) -> Path | None:
    """The folder of the reference in `lang` ("en", "es", ...); None when it is not written in that language."""
    return FOLDER / lang if lang in LANGUAGES else None
