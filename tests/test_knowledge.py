"""The knowledge index and its context source: indexing, ranking, the token budget, `!src`, the daemon's prompt."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbot.core.config import KnowledgeConfig, load_config
from meshbot.core.domain import Context, Note
from meshbot.core.policy import Accept, Kind
from meshbot.core.prompting import NOTES_SEPARATOR
from meshbot.service.knowledge import (
    SOURCE_MAX_BYTES,
    KnowledgeSource,
    knowledge_now,
    note_tokens,
    within_budget,
)
from meshbot.service.queueing import Query
from meshbot.storage.knowledge import MAX_REMEMBERED_SOURCES, Hit, KnowledgeIndex, match_expression
from tests.conftest import wait_until
from tests.fakes import ALICE, FakeModel, FakeRadio, broadcast, dm

CORPUS = {
    "community.md": """# Willow Creek

## Repeater

The main repeater stands on Heron Hill, on the water tower. It runs on solar power.

## Weekly net

The weekly net is every Tuesday at 19:30 on channel 0. Net control is Dario.

## Spring

The spring at Alder Bend gives clean water all year.
""",
    "radio.txt": "LoRa radios reach far at low power. The hop limit is 3 by default.\n\nChannel 0 is primary.\n",
    "first-aid.md": "# Bleeding\n\nPress firmly on the wound and keep the pressure on.\n",
}


@pytest.fixture
def notes_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    for name, text in CORPUS.items():
        target = folder / ("sub" if name == "first-aid.md" else "") / name
        target.write_text(text, encoding="utf-8")
    (folder / "ignored.bin").write_bytes(b"\x00repeater\x00")
    return folder


@pytest.fixture
def index() -> Iterator[KnowledgeIndex]:
    idx = KnowledgeIndex(":memory:")
    yield idx
    idx.close()


def titles(hits: list[Hit]) -> list[str]:
    return [h.note.title for h in hits]


def test_sync_indexes_every_note_file_split_at_headings(index: KnowledgeIndex, notes_dir: Path) -> None:
    report = index.sync([notes_dir])
    assert (report.indexed, report.dropped) == (3, 0)
    # community.md: three sections (its top heading has no text); radio.txt: one (short paragraphs merge)
    assert index.counts() == (3, 3 + 1 + 1)
    hits = index.search("Who is net control?", 5)
    assert titles(hits)[0] == "community.md > Willow Creek > Weekly net"
    assert hits[0].note.text.startswith("The weekly net is every Tuesday")
    assert "Heron Hill" not in hits[0].note.text  # the repeater section is a passage of its own


def test_only_markdown_and_text_files_are_read(index: KnowledgeIndex, notes_dir: Path) -> None:
    index.sync([notes_dir])
    assert all(not t.startswith("ignored") for t in titles(index.search("repeater", 10)))


def test_unchanged_files_are_not_read_again(index: KnowledgeIndex, notes_dir: Path) -> None:
    index.sync([notes_dir])
    again = index.sync([notes_dir])
    assert (again.indexed, again.unchanged, again.dropped) == (0, 3, 0)


def test_a_changed_file_is_indexed_again(index: KnowledgeIndex, notes_dir: Path) -> None:
    index.sync([notes_dir])
    note = notes_dir / "community.md"
    note.write_text("# Willow Creek\n\n## Weekly net\n\nThe weekly net moved to Thursday at 20:00.\n", encoding="utf-8")
    stat = note.stat()
    os.utime(note, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # a later mtime, whatever the fs
    report = index.sync([notes_dir])
    assert (report.indexed, report.unchanged) == (1, 2)
    texts = [h.note.text for h in index.search("weekly net", 5)]
    assert any("Thursday" in t for t in texts)
    assert not any("Tuesday" in t for t in texts)
    assert index.search("Heron Hill repeater", 5) == []  # the old sections are gone


def test_a_deleted_file_is_dropped(index: KnowledgeIndex, notes_dir: Path) -> None:
    index.sync([notes_dir])
    (notes_dir / "sub" / "first-aid.md").unlink()
    report = index.sync([notes_dir])
    assert report.dropped == 1
    assert index.search("bleeding wound pressure", 5) == []
    assert index.counts()[0] == 2


def test_a_missing_folder_is_logged_and_skipped(index: KnowledgeIndex, tmp_path: Path, caplog) -> None:
    caplog.set_level("WARNING", logger="meshbot")  # whatever level an earlier in-process CLI run left it at
    report = index.sync([tmp_path / "nope"])
    assert report.indexed == 0
    assert "not a folder" in caplog.text


def test_ranking_puts_the_passage_about_the_question_first(index: KnowledgeIndex, notes_dir: Path) -> None:
    index.sync([notes_dir])
    assert titles(index.search("Where is the repeater?", 3))[0] == "community.md > Willow Creek > Repeater"
    assert titles(index.search("where can I get clean water", 3))[0] == "community.md > Willow Creek > Spring"
    assert titles(index.search("what is the default hop limit", 3))[0] == "radio.txt"
    assert titles(index.search("How do I stop bleeding?", 3))[0] == "first-aid.md > Bleeding"


def test_a_question_of_only_common_words_finds_nothing(index: KnowledgeIndex, notes_dir: Path) -> None:
    index.sync([notes_dir])
    assert match_expression("what is it?") is None
    assert index.search("what is it?", 3) == []
    assert index.search("quantum chromodynamics", 3) == []


def test_search_words_are_never_fts_operators(index: KnowledgeIndex, notes_dir: Path) -> None:
    index.sync([notes_dir])
    # NEAR, AND, quotes and stars would be FTS5 syntax; here they are words or dropped.
    assert isinstance(index.search('repeater NEAR "solar" AND * ( ^', 3), list)


def hit(title: str, nbytes: int, score: float) -> Hit:
    return Hit(Note(title, "x" * nbytes), score)


def test_passages_that_do_not_fit_the_token_budget_are_left_out() -> None:
    hits = [hit("a", 300, -10.0), hit("b", 300, -9.0), hit("c", 60, -8.0)]
    budget = note_tokens(hits[0].note) + note_tokens(hits[2].note)
    chosen = within_budget(hits, max_passages=3, token_budget=budget)
    assert [n.title for n in chosen] == ["a", "c"]  # b would overflow; the shorter c still fits
    assert sum(note_tokens(n) for n in chosen) <= budget


def test_tokens_are_estimated_conservatively_from_bytes() -> None:
    # 1.5 bytes a token (the worst script measured): 300 bytes of notes count as 200 tokens or more.
    assert note_tokens(Note("t", "x" * 298)) >= 200


def test_weak_matches_and_extra_passages_are_left_out() -> None:
    hits = [hit("a", 10, -10.0), hit("b", 10, -6.0), hit("c", 10, -1.0)]
    assert [n.title for n in within_budget(hits, max_passages=5, token_budget=1000)] == ["a", "b"]
    assert [n.title for n in within_budget(hits, max_passages=1, token_budget=1000)] == ["a"]
    assert within_budget([], 3, 1000) == ()


def query_for(inbound, question: str) -> Query:
    decision = Accept(Kind.ASK, question, inbound.sender, inbound.channel, inbound.is_dm)
    return Query(inbound=inbound, decision=decision, accepted_at=0.0)


@pytest.fixture
def source(notes_dir: Path) -> Iterator[KnowledgeSource]:
    src = knowledge_now(KnowledgeConfig(paths=(str(notes_dir),)))
    assert src is not None
    yield src
    src.close()


def test_gather_adds_the_notes_and_nothing_relevant_is_an_empty_tuple(source: KnowledgeSource) -> None:
    context = source.gather(query_for(dm("where is the repeater?"), "where is the repeater?"), Context())
    assert context.notes and "Heron Hill" in context.notes[0].text
    nothing = source.gather(query_for(dm("tell me a joke"), "tell me a joke"), Context())
    assert nothing.notes == ()


def test_src_names_the_note_the_last_answer_drew_on(source: KnowledgeSource) -> None:
    question = "when is the weekly net?"
    query = query_for(dm(question), question)
    assert source.last_source(ALICE, None) is None  # nothing asked yet
    source.gather(query, Context())
    source.answered(query, question, "Tuesday at 19:30.")
    assert source.last_source(ALICE, None) == "community.md > Willow Creek > Weekly net"
    assert source.last_source(ALICE, 0) is None  # a channel question is kept apart from DMs


def test_src_after_an_answer_without_notes_says_none(source: KnowledgeSource) -> None:
    first = query_for(dm("where is the repeater?"), "where is the repeater?")
    source.gather(first, Context())
    source.answered(first, first.decision.question, "On Heron Hill.")
    second = query_for(dm("tell me a joke", packet_id=2), "tell me a joke")
    source.gather(second, Context())
    source.answered(second, "tell me a joke", "No.")
    assert source.last_source(ALICE, None) is None


def test_src_per_channel_and_bounded_to_one_fragment(source: KnowledgeSource) -> None:
    source.index.remember_source(ALICE, 1, ["é" * 200, "second"])
    text = source.last_source(ALICE, 1)
    assert text is not None and len(text.encode()) <= SOURCE_MAX_BYTES and text.endswith("…")
    on_channel = query_for(broadcast("!ai spring water?", channel=0), "spring water?")
    source.gather(on_channel, Context())
    source.answered(on_channel, "spring water?", "Alder Bend.")
    assert source.last_source(ALICE, 0) == "community.md > Willow Creek > Spring"


def test_remembered_sources_are_bounded(index: KnowledgeIndex) -> None:
    for node in range(MAX_REMEMBERED_SOURCES + 10):
        index.remember_source(node, None, ["t"])
    assert index.source_titles(0, None) is None  # the oldest were forgotten
    assert index.source_titles(MAX_REMEMBERED_SOURCES + 9, None) == ["t"]


def test_background_indexer_picks_up_a_new_file(notes_dir: Path) -> None:
    src = KnowledgeSource(KnowledgeIndex(":memory:"), KnowledgeConfig(paths=(str(notes_dir),), reindex_interval_s=0.05))
    query = query_for(dm("cistern"), "where is the cistern?")
    try:
        assert src.gather(query, Context()).notes == ()  # not indexed yet: no wait, no notes
        src.start()
        assert src.ready.wait(10)
        (notes_dir / "new.md").write_text("# Cistern\n\nThe cistern is behind the chapel.\n", encoding="utf-8")
        wait_until(lambda: bool(src.gather(query, Context()).notes))
        assert "chapel" in src.gather(query, Context()).notes[0].text
    finally:
        src.close()


def test_the_daemon_prompt_carries_the_notes_and_src_knows_them(
    make_daemon, radio: FakeRadio, model: FakeModel, notes_dir: Path, tmp_path: Path
) -> None:
    cfg = load_config(
        overrides={
            "knowledge.paths": [str(notes_dir)],
            "knowledge.index_path": str(tmp_path / "k.db"),
            # Without memory: a follow-up is searched with the previous question too (tested on its own).
            "memory.enabled": False,
            "join.window_s": 0,
        },
        environ={},
    )
    daemon = make_daemon(cfg)
    knowledge = next(s for s in daemon.contexts.sources if isinstance(s, KnowledgeSource))
    assert knowledge.ready.wait(10)
    model.queue("On Heron Hill.", "Fine.")
    radio.receive(dm("Where is the repeater?", packet_id=1))
    wait_until(daemon.idle)
    radio.receive(dm("how are you?", packet_id=2))
    wait_until(lambda: len(model.requests) == 2 and daemon.idle())
    asked = model.requests[0].turns[-1].content
    assert "Heron Hill" in asked and asked.endswith(f"{NOTES_SEPARATOR}Where is the repeater?")
    assert "Heron Hill" not in model.requests[0].turns[0].content  # the persona stays apart from the notes
    assert model.requests[1].turns[-1].content == "how are you?"  # small talk: no notes
    assert (tmp_path / "k.db").exists()


def test_without_knowledge_the_question_goes_alone(make_daemon, radio: FakeRadio, model: FakeModel) -> None:
    # Issue 18: the shipped reference is on by default, so "without knowledge" now also turns it off.
    daemon = make_daemon(**{"answers.reference": False})
    assert not any(isinstance(s, KnowledgeSource) for s in daemon.contexts.sources)
    radio.receive(dm("Where is the repeater?"))
    wait_until(lambda: bool(model.requests) and daemon.idle())
    assert model.requests[0].turns[-1].content == "Where is the repeater?"


def test_an_index_file_of_an_older_layout_is_rebuilt(tmp_path: Path, notes_dir: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("CREATE VIRTUAL TABLE passages USING fts5(title, body, path UNINDEXED); PRAGMA user_version = 1;")
    old.close()
    index = KnowledgeIndex(str(path))
    try:
        assert index.sync([notes_dir]).indexed == 3
        assert index.search("repeater", 1)
    finally:
        index.close()


def test_the_index_survives_a_restart_without_reading_files_again(tmp_path: Path, notes_dir: Path) -> None:
    path = str(tmp_path / "k.db")
    first = KnowledgeIndex(path)
    first.sync([notes_dir])
    first.remember_source(ALICE, None, ["community.md > Willow Creek > Repeater"])
    first.close()
    second = KnowledgeIndex(path)
    try:
        assert second.sync([notes_dir]).unchanged == 3
        assert second.source_titles(ALICE, None) == ["community.md > Willow Creek > Repeater"]
    finally:
        second.close()


def test_the_index_file_sits_next_to_the_store_unless_named(tmp_path: Path) -> None:
    from meshbot.app.compose import knowledge_index_path

    cfg = load_config(environ={})
    assert knowledge_index_path(cfg, str(tmp_path / "state" / "meshbot.db")) == str(
        tmp_path / "state" / "meshbot.knowledge.db"
    )
    assert knowledge_index_path(cfg, ":memory:") == ":memory:"
    named = load_config(overrides={"knowledge.index_path": str(tmp_path / "idx" / "k.db")}, environ={})
    assert knowledge_index_path(named, ":memory:") == str(tmp_path / "idx" / "k.db")
    assert (tmp_path / "idx").is_dir()


def test_knowledge_paths_come_from_the_environment_as_a_json_list(notes_dir: Path) -> None:
    cfg = load_config(environ={"MESHBOT_KNOWLEDGE_PATHS": f'["{notes_dir}", "/srv/other"]'})
    assert cfg.knowledge.paths == (str(notes_dir), "/srv/other") and cfg.knowledge.active
    assert not load_config(
        environ={"MESHBOT_KNOWLEDGE_ENABLED": "false", "MESHBOT_KNOWLEDGE_PATHS": '["/x"]'}
    ).knowledge.active


def test_a_follow_up_is_searched_with_the_previous_question(source: KnowledgeSource) -> None:
    from meshbot.core.domain import ChatTurn

    follow_up = "how is it kept going?"
    assert source.notes_for(follow_up) == ()
    history = (ChatTurn("user", "where is the repeater?"), ChatTurn("assistant", "On Heron Hill."))
    notes = source.notes_for(follow_up, history)
    assert notes and "solar" in notes[0].text
    context = source.gather(query_for(dm(follow_up), follow_up), Context(history=history))
    assert context.notes and "solar" in context.notes[0].text


def test_one_chance_word_in_a_long_question_is_not_relevance(index: KnowledgeIndex, notes_dir: Path) -> None:
    index.sync([notes_dir])
    # "water" alone ties the spring note to this question: not enough to call it relevant.
    assert index.search("Does ocean water cause salt poisoning?", 5) == []
    assert titles(index.search("clean water spring", 5))[0] == "community.md > Willow Creek > Spring"
    assert titles(index.search("weekly net", 5))[0] == "community.md > Willow Creek > Weekly net"


def test_the_demo_uses_the_example_notes_unless_the_operator_named_some(notes_dir: Path) -> None:
    from meshbot.app.runner import with_example_knowledge
    from meshbot.knowledge_example import FOLDER

    assert with_example_knowledge(load_config(environ={})).knowledge.paths == (str(FOLDER),)
    own = load_config(overrides={"knowledge.paths": [str(notes_dir)]}, environ={})
    assert with_example_knowledge(own).knowledge.paths == (str(notes_dir),)
    off = load_config(overrides={"knowledge.enabled": False}, environ={})
    assert not with_example_knowledge(off).knowledge.active
    assert {p.name for p in FOLDER.glob("*.md")} >= {"using-the-bot.md", "meshtastic-basics.md", "willow-creek.md"}
    assert (Path(__file__).resolve().parent.parent / "config" / "knowledge").resolve() == FOLDER


def test_src_through_the_composition_root_names_the_note_the_last_answer_drew_on(
    make_daemon, radio: FakeRadio, model: FakeModel, notes_dir: Path, tmp_path: Path
) -> None:
    """`!src` is wired by `build_daemon` to the knowledge source: one fragment naming the note."""
    cfg = load_config(
        overrides={"knowledge.paths": [str(notes_dir)], "knowledge.index_path": str(tmp_path / "k.db")}, environ={}
    )
    daemon = make_daemon(cfg)
    knowledge = next(s for s in daemon.contexts.sources if isinstance(s, KnowledgeSource))
    assert knowledge.ready.wait(10)
    model.queue("On Heron Hill.")
    radio.receive(dm("Where is the repeater?", packet_id=1))
    wait_until(lambda: daemon.idle() and len(radio.sent) == 1)
    radio.receive(dm("!src", packet_id=2))
    wait_until(lambda: daemon.idle() and len(radio.sent) == 2)
    answer = radio.texts()[-1]
    assert "repeater" in answer.lower() and len(radio.sent[-1].message.text.encode()) <= 200
    assert len(model.requests) == 1  # a command, never the model
