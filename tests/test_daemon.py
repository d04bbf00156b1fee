"""The daemon end to end with a fake radio and a fake model, in virtual time."""

from __future__ import annotations

import logging

import pytest

from meshbot.core.airtime import preset, time_on_air_s
from meshbot.core.clock import VirtualClock
from meshbot.core.fragmenter import MORE_HINT, strip_numbering
from meshbot.core.limits import text_frame_len
from tests.conftest import wait_until
from tests.fakes import ALICE, BOB, FakeModel, FakeRadio, broadcast, dm

LONG_ANSWER = ("LoRa is a long range radio modulation. " * 20).strip()


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def test_a_dm_gets_numbered_fragments_in_order(make_daemon, radio: FakeRadio, model: FakeModel) -> None:
    model.queue(LONG_ANSWER)
    daemon = make_daemon()
    radio.receive(dm("what is lora?"))
    wait_until(daemon.idle)
    texts = radio.texts()
    assert len(texts) == 3
    assert [t.split(" ", 1)[0] for t in texts] == ["1/+", "2/+", "3/+"]
    assert all(len(t.encode()) <= 200 for t in texts)
    assert all(s.message.dest == ALICE and s.message.want_ack for s in radio.sent)
    assert texts[-1].endswith('"more"]') or "more" in texts[-1]


def test_fragment_one_leaves_before_the_model_finishes(
    make_daemon, radio: FakeRadio, model: FakeModel, clock: VirtualClock
) -> None:
    model.token_s = 0.1
    model.queue(LONG_ANSWER)
    seen_at_first_send: list[int] = []
    radio.on_send = lambda rec: seen_at_first_send.append(model.pieces_yielded)
    daemon = make_daemon()
    radio.receive(dm("what is lora?"))
    wait_until(daemon.idle)
    total_pieces = len(LONG_ANSWER.split(" "))
    assert seen_at_first_send[0] < total_pieces


def test_answers_are_written_inside_the_models_run(make_daemon, radio: FakeRadio, model: FakeModel) -> None:
    # LlamaModel.run puts the job on its engine thread, so tidying and fragmenting happen between
    # tokens there instead of waking another thread for each one (1-4% of tokens/s on 2 cores).
    model.queue("First answer.", "Second answer.")
    daemon = make_daemon()
    radio.receive(dm("one", packet_id=1))
    radio.receive(dm("two", packet_id=2, sender=BOB))
    wait_until(lambda: len(radio.sent) == 2 and daemon.idle())
    assert len(model.requests) == 2 and model.streams_outside_run == 0


def test_a_tight_air_time_budget_shortens_answers_instead_of_overrunning(
    make_daemon, radio: FakeRadio, model: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    model.queue(LONG_ANSWER, LONG_ANSWER)
    # 0.11% of an hour is 3.96 s: two full fragments on LONG_FAST (1.95 s each), not the three wanted.
    daemon = make_daemon(**{"mesh.airtime_budget_percent": 0.11})
    radio.receive(dm("what is lora?", packet_id=1))
    wait_until(daemon.idle)
    texts = radio.texts()
    assert [t.split(" ", 1)[0] for t in texts] == ["1/+", "2/+"]
    assert texts[-1].endswith(MORE_HINT)  # the rest waits for "more", next hour
    assert "limited to 2 fragment(s)" in events(caplog, "shortened")[0].getMessage()
    radio.receive(dm("and once more?", packet_id=2))
    wait_until(lambda: bool(events(caplog, "dropped")) and daemon.idle())
    assert events(caplog, "dropped")[0].reason == "airtime-budget"
    assert len(radio.sent) == 2  # nothing else went on air
    used = sum(time_on_air_s(text_frame_len(len(t.encode()), reply_id=True), preset("LONG_FAST")) for t in texts)
    assert used <= 3600 * 0.11 / 100


def test_more_sends_the_rest(make_daemon, radio: FakeRadio, model: FakeModel) -> None:
    model.queue(LONG_ANSWER)
    daemon = make_daemon()
    radio.receive(dm("what is lora?", packet_id=1))
    wait_until(daemon.idle)
    radio.receive(dm("more", packet_id=2))
    wait_until(daemon.idle)
    texts = radio.texts()
    assert texts[3].startswith("4/")
    joined = " ".join(strip_numbering(t) for t in texts)
    assert joined.split() == LONG_ANSWER.split()
    radio.receive(dm("more", packet_id=3))
    wait_until(daemon.idle)
    assert radio.texts()[-1] == "Nothing more to send."


def test_a_short_answer_is_one_unnumbered_fragment(make_daemon, radio: FakeRadio, model: FakeModel) -> None:
    model.queue("Hello there.")
    daemon = make_daemon(
        **{"policy.channels": [{"index": 0, "public": True}]}
    )  # channel 0 is the public default: enabled here
    radio.receive(broadcast("!ai hi"))
    wait_until(daemon.idle)
    assert radio.texts() == ["Hello there."]
    assert radio.sent[0].message.dest == 0xFFFFFFFF and not radio.sent[0].message.want_ack


def test_ignored_packets_are_logged_with_a_reason(
    make_daemon, radio: FakeRadio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    daemon = make_daemon(
        **{"policy.channels": [{"index": 0, "public": True}]}
    )  # channel 0 is the public default: enabled here
    radio.receive(broadcast("just chatting"))
    radio.receive(dm(None, payload_len=3, packet_id=9))
    wait_until(daemon.idle)
    assert radio.sent == []
    assert [r.reason for r in events(caplog, "ignored")] == ["no-trigger", "invalid-utf8"]


def test_a_full_queue_says_busy_once(make_daemon, radio: FakeRadio, model: FakeModel, cfg) -> None:
    # Hold the worker on the first question so the queue fills up behind it.
    gate = __import__("threading").Event()
    real_stream = model.stream

    def held_stream(request, stats):
        gate.wait(5)
        yield from real_stream(request, stats)

    model.stream = held_stream
    daemon = make_daemon(
        cfg.model_copy(update={"queue": cfg.queue.model_copy(update={"max_depth": 1, "max_per_node": 1})})
    )
    for n in range(1, 5):
        radio.receive(dm(f"question {n}?", sender=BOB, packet_id=n))  # complete: not joined
    wait_until(lambda: len(radio.sent) >= 1)
    gate.set()
    wait_until(daemon.idle)
    assert radio.texts().count("Busy right now, please ask again in a few minutes.") == 1


def test_a_model_crash_does_not_stop_the_daemon(make_daemon, radio: FakeRadio, model: FakeModel) -> None:
    calls = {"n": 0}
    real_stream = model.stream

    def flaky(request, stats):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("model exploded")
        yield from real_stream(request, stats)

    model.stream = flaky
    model.queue("Second answer.")
    daemon = make_daemon()
    radio.receive(dm("first", packet_id=1))
    wait_until(lambda: calls["n"] == 1 and daemon.idle())
    radio.receive(dm("second", packet_id=2))
    wait_until(lambda: len(radio.sent) == 1)
    assert radio.texts() == ["Second answer."]


def test_the_worker_waits_while_the_sender_has_a_backlog(make_daemon, radio: FakeRadio, model: FakeModel, cfg) -> None:
    # Hold the sender on the first text: once more than one answer's worth waits to go, later
    # questions must stay queued, not become stale answers behind a stuck radio.
    import threading

    release = threading.Event()
    radio.on_send = lambda rec: release.wait(5)
    model.queue(LONG_ANSWER, LONG_ANSWER, "Three.", "Four.")
    daemon = make_daemon()
    for n, sender in enumerate((ALICE, BOB, 0x0C0C0C0C, 0x0D0D0D0D), start=1):
        radio.receive(dm(f"question {n}", sender=sender, packet_id=n))
    # Two long answers leave 5 texts waiting behind the one on air: more than max_fragments (3).
    wait_until(lambda: daemon.sender.backlog() >= 2 * daemon.cfg.mesh.max_fragments - 1)
    assert len(model.requests) == 2 and daemon.queue.depth() == 2
    release.set()
    radio.on_send = None
    wait_until(daemon.idle)
    assert len(model.requests) == 4
