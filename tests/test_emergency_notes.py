"""An emergency's answer draws on the operator's emergency and first-aid notes first (daemon on a fake radio)."""

from __future__ import annotations

from pathlib import Path

from meshbot.core.config import load_config
from meshbot.service.knowledge import KnowledgeSource
from tests.conftest import wait_until
from tests.fakes import BOB, FakeModel, FakeRadio, dm

FIRST_AID = """# First aid

## Bleeding

Press hard on the wound with a clean cloth and keep pressing. Raise the limb.

## Fractures

Do not move a broken limb; splint it as it lies.
"""
TRAILS = """# Trails

## Ridge path

The ridge path starts at the old bridge and climbs to the radio mast. Mind the loose rock after rain.
"""


def test_an_emergency_gets_first_aid_notes_first_and_an_ordinary_question_its_own(
    make_daemon, radio: FakeRadio, model: FakeModel, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "first_aid.md").write_text(FIRST_AID, encoding="utf-8")
    (notes / "trails.md").write_text(TRAILS, encoding="utf-8")
    cfg = load_config(
        overrides={
            "knowledge.paths": [str(notes)],
            "knowledge.index_path": str(tmp_path / "k.db"),
            "memory.enabled": False,
            "join.window_s": 0,
        },
        environ={},
    )
    daemon = make_daemon(cfg)
    knowledge = next(s for s in daemon.contexts.sources if isinstance(s, KnowledgeSource))
    assert knowledge.ready.wait(10)
    model.queue("Press on the wound.", "It starts at the bridge.")
    radio.receive(dm("SOS my friend fell on the ridge path", packet_id=1))
    wait_until(lambda: len(model.requests) == 1 and daemon.idle())
    radio.receive(dm("where does the ridge path start?", sender=BOB, packet_id=2))  # not a follow-up: another node
    wait_until(lambda: len(model.requests) == 2 and daemon.idle())
    emergency, ordinary = (r.turns[-1].content for r in model.requests)
    assert emergency.index("Press hard on the wound") < emergency.index("ridge path starts")
    assert "Do not move a broken limb" in emergency
    assert "ridge path starts" in ordinary and "wound" not in ordinary
