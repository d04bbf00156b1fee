"""Faults: a node flooding the bot gets its fair share and one notice, while five others are answered."""

from __future__ import annotations

import logging
import math

import pytest

from meshbot.app.compose import build_daemon
from meshbot.core.clock import VirtualClock
from meshbot.core.config import load_config
from meshbot.service.daemon import Daemon
from meshbot.storage.store import Store
from tests.conftest import wait_until
from tests.fakes import AI_TAG, FakeRadio, dm
from tests.faults_support import PEER_NUMS, GatedModel, events

# -- a flood from one node while five others ask once ----------------------------------------
FLOODER = PEER_NUMS[7]


def test_a_flooding_node_gets_its_fair_share_and_one_notice(
    clock: VirtualClock, radio: FakeRadio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    # join.window_s 0: each "flood message number k" is its own question (joining: tests/test_joining.py).
    overrides = {"limits.per_node_burst": 5, "queue.max_per_node": 5, "join.window_s": 0}
    cfg = load_config(overrides=overrides, environ={})
    model = GatedModel()
    daemon = build_daemon(cfg, radio=radio, model=model, clock=clock, store=Store(":memory:"))
    daemon.start()
    try:
        others = {PEER_NUMS[i]: 100 * (i + 1) for i in range(5)}  # node -> its one question's id
        asks_at = {10 + 15 * i: node for i, node in enumerate(others)}  # the five ask 9 s apart
        injected = 0
        for k in range(100):  # 100 messages in a minute, with the five questions among them
            clock.advance(0.6)
            radio.receive(dm(f"flood message number {k}", sender=FLOODER, packet_id=9000 + k))
            injected += 1
            if k in asks_at:
                node = asks_at[k]
                radio.receive(dm(f"my one question, from node {node:x}", sender=node, packet_id=others[node]))
                injected += 1
            wait_until(lambda: decisions(caplog) == injected, timeout=5)  # judged in this order
        model.gate.set()
        wait_until(lambda: daemon.idle() and len(radio.sent) >= 11, timeout=20)
    finally:
        daemon.stop(grace_s=1.0)
    replies = [s.message for s in radio.sent]
    answer_order = list(dict.fromkeys(m.reply_id for m in replies if m.reply_id is not None))
    flood_answers = [pos for pos, rid in enumerate(answer_order) if rid >= 9000]
    assert sorted(set(answer_order) & set(others.values())) == sorted(others.values()), "one of the five was lost"
    assert len(flood_answers) == cfg.limits.per_node_burst  # the flooder's accepted ones are answered too
    # Round-robin: while the flooder waits with four more, each of the five is answered before its third.
    assert all(answer_order.index(pid) < flood_answers[2] for pid in others.values()), answer_order
    minutes = math.ceil(3600 / cfg.limits.per_node_per_hour / 60)  # one token back, as the notice says
    assert [m.text for m in replies if m.dest == FLOODER and m.reply_id is None] == [
        AI_TAG + cfg.limits.notice.format(minutes=minutes)
    ]
    assert len(events(caplog, "ignored", "node-rate")) == 100 - cfg.limits.per_node_burst


def decisions(caplog: pytest.LogCaptureFixture) -> int:
    """Packets the daemon has judged so far."""
    return sum(getattr(r, "event", None) in ("queued", "ignored", "dropped", "admin") for r in caplog.records)
