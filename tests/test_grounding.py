"""Grounded answers, the pure parts: facts and their check, extractive answers, small talk, the question's language."""

from __future__ import annotations

import pytest

from meshbot.core.domain import Note
from meshbot.core.grounding import (
    asks_local,
    check_facts,
    extractive,
    facts,
    is_chat,
    question_names,
    sentences,
    short_title,
)
from meshbot.core.language import guess_language
from meshbot.core.text import utf8_len

NET = "The weekly net is on Tuesday at 10:00 on channel 2. Net control is Dario."


def test_facts_are_normalised_numbers_times_units_and_names() -> None:
    found = facts("Below 95 °F call 111 at 7:30 pm for ten minutes, near Heron Hill.")
    assert {"n95f", "n95", "n111", "t19:30", "n10", "xheron", "xhill"} <= found
    assert facts("at 19.30") == facts("at 7:30 PM") == {"t19:30"}
    assert "n10%" in facts("a 10 % duty cycle") and "n10%" in facts("ten percent... 10 percent")


def test_a_changed_time_is_caught_as_invented() -> None:
    check = check_facts("The net starts at 10:30 on Tuesday.", [NET], "When is the weekly net?", NET)
    assert not check.ok and check.invented == {"t10:30"}


def test_an_answer_without_any_fact_of_the_answering_sentence_dropped_them() -> None:
    check = check_facts("The net is held every week.", [NET], "When is the weekly net?", NET)
    assert not check.ok and {"t10:00", "n2"} <= check.dropped


def test_an_answer_that_keeps_the_facts_passes_even_in_other_words() -> None:
    assert check_facts("It is on Tuesday at 10:00.", [NET], "When is the weekly net?", NET).ok
    assert check_facts("Dario runs the net.", [NET], "Who is net control?", NET).ok  # a name opening the answer
    assert check_facts("On Tuesdays.", [NET], "Which day is the net?", NET).ok  # a plural of the note's word


def test_a_temperature_in_the_wrong_unit_is_a_changed_fact() -> None:
    note = "Hypothermia starts when the body's core drops below 35 °C (95 °F)."
    assert check_facts("Below 35 °C.", [note], "When does hypothermia start?", note).ok
    assert not check_facts("Below 36.4 °C, call 111.", [note], "When does hypothermia start?", note).ok


def test_an_answer_of_the_models_own_words_is_not_grounded() -> None:
    note = "Cool a burn under cool running water for 20 minutes."
    check = check_facts("Apply butter and wrap it tightly overnight.", [note], "What do I put on a burn?", note)
    assert check.unsupported > 0.5 and not check.ok


def test_a_bare_figure_is_not_an_answer_though_the_passage_holds_it() -> None:
    note = "Bring water to a rolling boil for 1 minute, or 3 minutes above 2,000 m."
    question = "How long should water be boiled?"
    assert check_facts("3.", [note], question, note).too_short  # 3 what, and where?
    assert not check_facts("3.", [note], question, note).ok
    assert check_facts("Boil it for 1 minute.", [note], question, note).ok


def test_an_answer_without_the_passages_yes_or_no_dropped_its_verdict() -> None:
    note = "Nein. Meshtastic-Knoten sprechen per Funk direkt miteinander, ohne Internet."
    question = "Braucht Meshtastic Internet?"
    wrong = "Eine MQTT-Brücke kann Meshes über das Internet verbinden."
    assert "v:nein" in check_facts(wrong, [note], question, note, "de").dropped
    # The verdict opens the passage, a sentence of its own, while the best sentence is the one after it.
    after = "Meshtastic-Knoten sprechen per Funk direkt miteinander, ohne Internet."
    assert "v:nein" in check_facts(wrong, [note], question, after, "de").dropped
    assert check_facts("Nein, Meshtastic-Knoten sprechen per Funk, ohne Internet.", [note], question, note, "de").ok
    # "No one" and a French "Si ..." open sentences without being verdicts.
    for plain in ("No one needs a SIM card for Meshtastic.", "Si la personne respire, mettez-la sur le côté."):
        dropped = check_facts("A SIM card is not needed.", [plain], "Do I need a SIM card?", plain).dropped
        assert not [fact for fact in dropped if fact.startswith("v:")]


def test_an_answer_that_denies_nothing_where_its_sentence_denies_says_the_opposite() -> None:
    note = "Meshtastic has no standard emergency channel. Channel 0 is the primary channel."
    key = "Meshtastic has no standard emergency channel."
    question = "What is the name of the emergency channel?"
    assert check_facts("The emergency channel is 0.", [note], question, key).dropped == {"v:not"}
    assert check_facts("There is no standard emergency channel.", [note], question, key).ok


def test_an_answer_that_keeps_none_of_the_passages_named_steps_dropped_them() -> None:
    key = "Para curar un esguince de tobillo, reposo: para y no apoyes el tobillo torcido."
    question = "¿Cómo trato un esguince de tobillo?"
    assert check_facts("Para y no apoyes el tobillo torcido.", [key], question, key, "es").dropped == {"l:reposo"}
    assert check_facts("Reposo: para y no apoyes el tobillo.", [key], question, key, "es").ok


def test_sentences_join_wrapped_lines_and_skip_headings() -> None:
    text = "## Hop limit\nThe default hop limit is 3 and the\nmaximum is 7. More hops cost air.\n\nSecond paragraph."
    assert sentences(text) == [
        "The default hop limit is 3 and the maximum is 7.",
        "More hops cost air.",
        "Second paragraph.",
    ]


def test_extractive_answer_is_the_best_sentences_tagged_and_within_budget() -> None:
    note = Note(
        "meshtastic.md > Meshtastic: how the mesh works > Hop limit",
        "The hop limit is how often a message is relayed. The default hop limit is 3 and the maximum is 7. "
        "Sources: the Meshtastic documentation.",
    )
    text = extractive("What is the default hop limit?", [note], 190)
    assert text.startswith("Meshtastic: ") and "The default hop limit is 3 and the maximum is 7." in text
    assert "Sources" not in text and utf8_len(text) <= 190


def test_an_extractive_answer_too_long_for_one_fragment_takes_the_whole_budget() -> None:
    long = "Press " + "firmly and keep pressing on the wound " * 8 + "for ten minutes."
    note = Note("bleeding.md > Bleeding", long)
    assert extractive("How do I stop bleeding?", [note], 120, whole_bytes=600).endswith("ten minutes.")
    assert extractive("How do I stop bleeding?", [note], 120).endswith("…")


def test_short_title_is_the_top_heading_before_its_colon_or_the_file() -> None:
    assert short_title(Note("bleeding.md > Bleeding: how to stop it > Tourniquet", "x")) == "Bleeding"
    assert short_title(Note("drinking-water.md", "x")) == "Drinking water"


@pytest.mark.parametrize(
    "text", ["hello", "Hi there!", "thanks", "Who are you?", "¿Cómo estás?", "Wer bist du?", "Merci"]
)
def test_small_talk_and_questions_about_the_bot_are_chat(text: str) -> None:
    assert is_chat(text)


@pytest.mark.parametrize("text", ["Hi, how do I stop bleeding?", "What is the hop limit?", "When is the net?"])
def test_factual_questions_are_not_chat(text: str) -> None:
    assert not is_chat(text)


@pytest.mark.parametrize(
    ("question", "lang"),
    [
        ("What should I do after a snake bite?", "en"),
        ("¿Qué hago después de una mordedura de serpiente?", "es"),
        ("Was soll ich nach einem Schlangenbiss tun?", "de"),
        ("Que faire après une morsure de serpent ?", "fr"),
        ("Wie viele Bytes passen in eine Nachricht?", "de"),
        ("Combien d'octets tiennent dans un message ?", "fr"),
        ("LoRa?", "en"),  # nothing to go on: English
    ],
)
def test_the_question_language_is_guessed_from_its_words(question: str, lang: str) -> None:
    assert guess_language(question) == lang


@pytest.mark.parametrize(
    ("question", "local"),
    [
        ("Where is the main repeater?", True),
        ("Who looks after the Pine Ridge node?", True),
        ("When is the next mesh meetup at the library?", True),
        ("Wann ist das nächste Mesh-Treffen?", True),
        ("Which channel is our emergency channel?", True),
        ("Who can read messages on the default LongFast channel?", False),
        ("When should I call an ambulance after a blow to the head?", False),
        ("How do I stop heavy bleeding?", False),
        ("Which command makes the bot forget our conversation?", False),  # about the bot, not the community
    ],
)
def test_questions_about_local_places_people_and_events_are_told_apart(question: str, local: bool) -> None:
    assert asks_local(question) is local


def test_names_in_a_question_are_capitalised_words_not_opening_a_sentence() -> None:
    assert question_names("How is the Willow Creek repeater powered?") == ["Willow", "Creek"]
    assert question_names("What is LoRa? Does it need the internet?") == []
    assert question_names("How many bytes does é take in UTF-8?") == []


def test_an_english_request_with_a_word_other_languages_share_stays_english() -> None:
    # "me" is Spanish too: "tell me about lora" once got the Spanish reference.
    assert guess_language("tell me about lora and meshtastic") == "en"
    assert guess_language("¿me ayudas con una quemadura?") == "es"
