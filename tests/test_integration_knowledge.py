"""Grounding end to end: the real bundled model, through the virtual node, answers from a fixture note."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.config import load_config
from meshbot.core.fragmenter import strip_numbering
from meshbot.service.daemon import Daemon
from meshbot.service.knowledge import KnowledgeSource
from meshbot.sim.node.node import VirtualNode
from meshbot.storage.store import Store
from tests.conftest import wait_until

pytestmark = [pytest.mark.model, pytest.mark.slow]

BOT = 0x0BB0_0001
ALICE = 0x0A11_CE00
# A made-up place: no model knows it, so only the note can give the answer.
NOTE = """# Greenfield mesh

## Repeater

The Greenfield repeater stands on Mount Tabor, next to the old fire lookout.

## Bake sale

The bake sale is on the first Sunday of June.
"""


@pytest.fixture
def node() -> Iterator[VirtualNode]:
    vnode = VirtualNode(BOT, short_name="BOT", modem_preset="SHORT_FAST", region="US", peers=[(ALICE, "Alice", "ALI")])
    vnode.start()
    yield vnode
    vnode.stop()


@pytest.fixture
def daemon(node: VirtualNode, bundled_model, tmp_path: Path) -> Iterator[Daemon]:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "greenfield.md").write_text(NOTE, encoding="utf-8")
    cfg = load_config(
        overrides={
            "radio.host": f"127.0.0.1:{node.port}",
            "mesh.min_gap_s": 2.0,
            "radio.connect_timeout_s": 20,
            "knowledge.paths": [str(notes)],
            "model.seed": 42,  # each query's seed: the same draw every run
            "knowledge.index_path": str(tmp_path / "knowledge.db"),
        },
        environ={},
    )
    bot = build_daemon(cfg, model=bundled_model, store=Store(":memory:"))
    bot.start()
    yield bot
    bot.stop(grace_s=5.0)


def test_a_question_only_a_note_answers_is_answered_with_the_fact(node: VirtualNode, daemon: Daemon) -> None:
    knowledge = next(s for s in daemon.contexts.sources if isinstance(s, KnowledgeSource))
    assert knowledge.ready.wait(20), "the notes were not indexed"
    node.inject_text(ALICE, "Where is the Greenfield repeater?", packet_id=501)
    wait_until(lambda: len(node.sent) >= 1 and daemon.idle(), timeout=180)
    answer = " ".join(strip_numbering(p.text) for p in node.sent)
    assert "Tabor" in answer, answer
    assert all(len(p.payload) <= 200 for p in node.sent)
    assert knowledge.last_source(ALICE, None) == "greenfield.md > Greenfield mesh > Repeater"
