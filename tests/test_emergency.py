"""The emergency words, the alert throttle and the alert's text (core/emergency.py): pure, properties first."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from meshbot.core.config import load_config
from meshbot.core.emergency import (
    DEFAULT_WORDS,
    AlertFacts,
    AlertThrottle,
    EmergencyWords,
    Position,
    alert_text,
    bearing_deg,
    compass,
    distance_m,
    is_emergency_note,
    sender_proven,
)
from tests.fakes import dm

WORDS = EmergencyWords(DEFAULT_WORDS)
SPACED = [w for w in DEFAULT_WORDS if w.isascii()]
# Text around a word: letters never touch it (that would make another word), punctuation and spaces may.
SEPARATORS = st.sampled_from([" ", ", ", "! ", "\n", " - ", ": ", "(", ")", "... "])
FILLER = st.text(alphabet=string.ascii_lowercase + " ", max_size=30)


@given(st.sampled_from(DEFAULT_WORDS), FILLER, SEPARATORS, SEPARATORS, FILLER, st.booleans())
def test_a_default_word_is_found_whatever_its_case_and_the_words_around_it(
    word: str, before: str, sep1: str, sep2: str, after: str, upper: bool
) -> None:
    text = f"{before}{sep1}{word.upper() if upper else word}{sep2}{after}"
    assert WORDS.match(text) is not None


@given(st.sampled_from(SPACED), st.text(alphabet=string.ascii_letters, min_size=1, max_size=4), st.booleans())
def test_a_spaced_word_inside_a_longer_word_is_not_an_emergency(word: str, extra: str, in_front: bool) -> None:
    text = f"{extra}{word}" if in_front else f"{word}{extra}"
    assert EmergencyWords([word]).match(text) is None


@given(st.text(alphabet=string.ascii_letters + " ,.?", max_size=60))
def test_a_text_without_any_word_is_not_an_emergency(text: str) -> None:
    folded = text.casefold()
    assume(not any(w in folded for w in SPACED))
    assert WORDS.match(text) is None


@given(st.lists(st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=8), min_size=1, max_size=4))
def test_configured_phrases_match_with_any_spacing_between_their_words(parts: list[str]) -> None:
    phrase = " ".join(parts)
    assert EmergencyWords([phrase]).match("x " + "   ".join(p.upper() for p in parts) + " y") is not None


@pytest.mark.parametrize("text", ["SOSA", "helpful", "!help", "sosumi", "Help menu please", "emergencyroom"])
def test_false_friends_are_not_emergencies(text: str) -> None:
    assert WORDS.match(text) is None


@pytest.mark.parametrize(
    "text",
    ["SOS", "sos!", "Mayday mayday", "help me", "Socorro", "auxilio!", "HILFE", "Notfall", "au secours", "aiuto",
     "Помогите", "допоможіть!", "救命啊", "助けてください", "살려주세요"],
)  # fmt: skip
def test_emergencies_in_many_languages(text: str) -> None:
    assert WORDS.match(text) is not None


def test_cjk_words_match_inside_a_sentence_without_spaces() -> None:
    assert WORDS.match("我的朋友摔倒了救命") == "救命"
    assert WORDS.match("山で助けてほしい") == "助けて"


def test_an_empty_list_or_turned_off_matches_nothing() -> None:
    assert EmergencyWords([]).match("SOS") is None
    cfg = load_config(environ={"MESHBOT_EMERGENCY_ENABLED": "false"})
    assert not cfg.emergency.active


def test_the_env_names_set_the_words_and_the_notify_nodes() -> None:
    cfg = load_config(
        environ={"MESHBOT_EMERGENCY_WORDS": '["bear attack", "sos"]', "MESHBOT_EMERGENCY_NOTIFY_NODES": '["!0a000001"]'}
    )
    assert cfg.emergency.words == ("bear attack", "sos") and cfg.emergency.notify_nodes == ("!0a000001",)
    assert EmergencyWords(cfg.emergency.words).match("A BEAR  attack at camp") == "bear  attack"


def test_proof_is_a_pki_dm() -> None:
    assert sender_proven(dm("sos", pki=True))
    assert not sender_proven(dm("sos", pki=False))


# -- the throttle ----------------------------------------------------------------------------------
@given(st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=40))
def test_alerts_within_the_window_come_at_most_once_a_minute_and_no_text_is_lost(gaps: list[float]) -> None:
    throttle, now, alerts, texts = AlertThrottle(120.0, 60.0), 0.0, [], []
    for i, gap in enumerate(gaps):
        now += gap
        texts.append(f"t{i}")
        sent = throttle.heard(7, f"t{i}", now)
        if sent is not None:
            alerts.append((now, sent))
        for _, held in throttle.due(now):
            alerts.append((now, held))
    for (earlier, _), (later, _) in zip(alerts, alerts[1:], strict=False):
        assert later - earlier >= 60.0 - 1e-9
    for _, held in throttle.due(now + 61.0):  # a minute on (and a second, past float rounding): all is out
        alerts.append((now + 61.0, held))
    assert [t for _, sent in alerts for t in sent] == texts


def test_a_new_emergency_after_the_window_alerts_at_once() -> None:
    throttle = AlertThrottle(120.0, 60.0)
    assert throttle.heard(1, "a", 0.0) == ["a"]
    assert throttle.heard(1, "b", 30.0) is None
    assert throttle.due(59.0) == [] and throttle.due(60.0) == [(1, ["b"])]
    assert throttle.heard(2, "other node", 61.0) == ["other node"]
    assert throttle.heard(1, "c", 300.0) == ["c"]


# -- the alert -------------------------------------------------------------------------------------
def test_distance_and_bearing_of_known_places() -> None:
    berlin, paris = Position(52.5200, 13.4050), Position(48.8566, 2.3522)
    assert distance_m(berlin, paris) == pytest.approx(878_000, rel=0.01)
    assert compass(bearing_deg(berlin, paris)) == "SW"
    assert compass(bearing_deg(paris, berlin)) == "NE"
    assert distance_m(berlin, berlin) == 0.0


def test_the_alert_says_who_how_where_and_what() -> None:
    facts = AlertFacts(
        sender=0x0A000001,
        name="Ann",
        texts=["SOS fell  at the\nbridge"],
        hops=2,
        snr=-7.25,
        channel=None,
        position=Position(52.5290, 13.4050, time=1000.0),
        origin=Position(52.5200, 13.4050),
    )
    text = alert_text(facts, now_wall=1000.0 + 600)
    assert text == (
        "EMERGENCY from Ann !0a000001 (DM, 2 hops, SNR -7.2), at 52.52900,13.40500 (10min old) 1.0 km N of the bot: "
        '"SOS fell at the bridge"'
    )
    unknown = alert_text(AlertFacts(1, None, ["a", "b"], None, None, 3, None, None), 0.0)
    assert unknown == 'EMERGENCY from !00000001 (ch3, hops ?, SNR ?), position unknown: "a" | "b"'


@pytest.mark.parametrize(
    ("title", "wanted"),
    [("first_aid.md > Bleeding", True), ("notes/Emergency/radio.md", True), ("Notfall.md", True),
     ("lora/antennas.md > Gain", False), ("recipes.md > Soup", False)],
)  # fmt: skip
def test_emergency_and_first_aid_notes_are_told_by_their_title(title: str, wanted: bool) -> None:
    assert is_emergency_note(title) is wanted
