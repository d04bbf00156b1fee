"""Name → implementation maps chosen by config, loaded lazily so that an unused backend is never imported.

A registry maps a config value (say `model.backend = "llama_cpp"`) to `"module:attribute"`. Only the
chosen entry's module is imported: a daemon on the openai backend never imports llama.cpp.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


class UnknownName(ValueError):
    """A config value names no registered implementation; the message names the key and the known names."""


class Registry:
    """One config key's choices: name → "package.module:factory"."""

    def __init__(self, key: str, entries: Mapping[str, str]) -> None:
        self.key = key
        self._entries = dict(entries)

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._entries))

    def check(self, name: str) -> None:
        """Raise UnknownName unless `name` is registered."""
        if name not in self._entries:
            known = ", ".join(repr(n) for n in self.names())
            raise UnknownName(f"{self.key}: unknown value {name!r}; known: {known}")

    def load(self, name: str) -> Any:
        """The factory registered under `name`, imported now."""
        self.check(name)
        module, _, attr = self._entries[name].partition(":")
        return getattr(importlib.import_module(module), attr)
