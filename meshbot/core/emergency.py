"""Emergencies: which texts are one, when to alert again, and what the alert says. Pure: no I/O, no clock.

A text is an emergency when it holds one of `[emergency] words` as a whole word or phrase, case-insensitive.
Scripts written without spaces (Chinese, Japanese, Korean, Thai, ...) have no word boundaries to match
against, so a word in them matches anywhere in the text: choose such words specific enough ("救命", not "救").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import regex

from meshbot.core import geo
from meshbot.core.domain import Inbound
from meshbot.core.geo import compass
from meshbot.core.ids import node_id

# At least ten languages; every entry is matched as a whole word or phrase (see the module docstring).
DEFAULT_WORDS: tuple[str, ...] = (
    # English
    "sos", "mayday", "emergency", "injured", "help me",
    # Spanish, Portuguese
    "socorro", "auxilio", "auxílio", "emergencia", "emergência", "ayuda urgente", "herido", "ferido",
    # German
    "hilfe", "notfall", "verletzt",
    # French
    "secours", "au secours", "urgence", "blessé",
    # Italian
    "aiuto", "emergenza", "ferito",
    # Dutch, Polish
    "noodgeval", "ratunku",
    # Russian, Ukrainian
    "помогите", "спасите", "допоможіть", "рятуйте",
    # Chinese, Japanese, Korean (matched anywhere: no word boundaries)
    "救命", "紧急", "緊急", "助けて", "살려주세요", "도와주세요",
    # Turkish, Greek, Arabic, Hindi
    "imdat", "βοήθεια", "النجدة", "बचाओ",
)  # fmt: skip

# Writing systems without spaces between words: a word in them is matched as a substring.
_UNSPACED = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]")
# A word character, for the boundary test: letters, marks and digits of any script, and the underscore.
_WORDY = r"[\p{L}\p{M}\p{N}_]"


def _pattern(word: str) -> str:
    """The regex for one configured word: its words separated by any whitespace, bounded unless unspaced."""
    body = r"\s+".join(regex.escape(part) for part in word.casefold().split())
    if _UNSPACED.search(word):
        return body
    return rf"(?<!{_WORDY}){body}(?!{_WORDY})"


class EmergencyWords:
    """Matches texts against the configured emergency words; an empty list matches nothing."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = tuple(w for w in (" ".join(word.split()) for word in words) if w)
        # Longest first: "au secours" is reported rather than "secours" when both are there.
        ordered = sorted(self.words, key=len, reverse=True)
        self._re = regex.compile("|".join(f"(?:{_pattern(w)})" for w in ordered)) if ordered else None

    def match(self, text: str | None) -> str | None:
        """The first emergency word or phrase `text` holds (as the text spells it), or None."""
        if self._re is None or not text:
            return None
        found = self._re.search(text.casefold())
        return found.group(0) if found else None


def sender_proven(msg: Inbound) -> bool:
    """True when the packet itself proves its sender: a PKI DM (only the holder of the sender's key can make one).

    The one place the emergency lane asks about proof, so that sender identity (PKI pins, MQTT rules) can
    grow here without touching the lane.
    """
    return msg.is_dm and msg.pki


@dataclass
class _NodeAlerts:
    last_emergency: float
    last_alert: float
    held: list[str]  # texts of emergencies heard since the last alert, not yet alerted


class AlertThrottle:
    """A node's further emergencies within `window_s` alert again at most once per `every_s`; none is lost.

    An emergency that may not alert yet is held, and its text goes with the next alert (`due`).
    """

    def __init__(self, window_s: float = 120.0, every_s: float = 60.0) -> None:
        self.window_s = window_s
        self.every_s = every_s
        self._nodes: dict[int, _NodeAlerts] = {}

    def heard(self, node: int, text: str, now: float) -> list[str] | None:
        """An emergency from `node`: the texts to alert with now, or None when it is held for later."""
        state = self._nodes.get(node)
        if state is None or now - state.last_emergency > self.window_s:
            self._nodes[node] = _NodeAlerts(now, now, [])
            return [text]
        state.last_emergency = now
        if now - state.last_alert >= self.every_s:
            texts, state.held, state.last_alert = [*state.held, text], [], now
            return texts
        state.held.append(text)
        return None

    def due(self, now: float) -> list[tuple[int, list[str]]]:
        """Held texts whose node may alert again now, as (node, texts); forgets quiet nodes."""
        out = []
        for node, state in list(self._nodes.items()):
            if state.held and now - state.last_alert >= self.every_s:
                out.append((node, state.held))
                state.held, state.last_alert = [], now
            elif not state.held and now - state.last_emergency > self.window_s:
                del self._nodes[node]
        return out


# -- positions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Position:
    """A node's last reported position: degrees, and when it was taken (epoch seconds; None if unknown)."""

    latitude: float
    longitude: float
    time: float | None = None
    altitude_m: float | None = None


@runtime_checkable
class PositionSource(Protocol):
    """Where a node's last position comes from: the radio's node DB today, the node directory later."""

    def position_of(self, node: int) -> Position | None:
        """The node's last known position, or None."""


def distance_m(a: Position, b: Position) -> float:
    """Great-circle distance between two positions, in metres."""
    return geo.distance_m(a.latitude, a.longitude, b.latitude, b.longitude)


def bearing_deg(origin: Position, target: Position) -> float:
    """Initial bearing from `origin` to `target`, degrees clockwise from north (0..360)."""
    return geo.bearing_deg(origin.latitude, origin.longitude, target.latitude, target.longitude)


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 0):.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _distance(metres: float) -> str:
    return f"{metres:.0f} m" if metres < 1000 else f"{metres / 1000:.1f} km"


def position_line(position: Position | None, origin: Position | None, now_wall: float) -> str:
    """Where the sender was: coordinates, the fix's age, and distance and bearing from `origin` when known."""
    if position is None:
        return "position unknown"
    parts = [f"at {position.latitude:.5f},{position.longitude:.5f}"]
    if position.time:
        parts.append(f"({_age(now_wall - position.time)} old)")
    if origin is not None:
        parts.append(f"{_distance(distance_m(origin, position))} {compass(bearing_deg(origin, position))} of the bot")
    return " ".join(parts)


@dataclass(frozen=True)
class AlertFacts:
    """What an alert tells the helpers about one emergency."""

    sender: int
    name: str | None
    texts: Sequence[str]
    hops: int | None
    snr: float | None
    channel: int | None  # None: a DM
    position: Position | None
    origin: Position | None  # the bot's own node's position


def alert_text(facts: AlertFacts, now_wall: float) -> str:
    """The whole alert as one text (the sender splits it into fragments): who, how heard, where, what they said."""
    who = f"{facts.name} {node_id(facts.sender)}" if facts.name else node_id(facts.sender)
    heard = "DM" if facts.channel is None else f"ch{facts.channel}"
    hops = "hops ?" if facts.hops is None else f"{facts.hops} hop{'' if facts.hops == 1 else 's'}"
    snr = "SNR ?" if facts.snr is None else f"SNR {facts.snr:.1f}"
    said = " | ".join(f'"{" ".join(t.split())}"' for t in facts.texts)
    where = position_line(facts.position, facts.origin, now_wall)
    return f"EMERGENCY from {who} ({heard}, {hops}, {snr}), {where}: {said}"


# -- notes -------------------------------------------------------------------------------------------
# A note whose heading or path says one of these is preferred for an emergency's answer.
NOTE_WORDS: tuple[str, ...] = (
    "emergency", "first aid", "first-aid", "firstaid", "sos", "rescue", "injury",
    "notfall", "erste hilfe", "urgence", "premiers secours", "emergencia", "primeros auxilios",
    "primeiros socorros", "emergenza", "primo soccorso", "помощь", "невідкладна",
)  # fmt: skip
_NOTE_WORDS = EmergencyWords(NOTE_WORDS)


def is_emergency_note(title: str) -> bool:
    """True when a note's title (its file path and heading) says emergency or first aid."""
    spaced = regex.sub(r"[_/\\.#>-]+", " ", title)
    return _NOTE_WORDS.match(spaced) is not None or _NOTE_WORDS.match(title) is not None
