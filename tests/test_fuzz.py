"""Fuzz the inbound path: random packet dicts through `parse_packet` then `Daemon.admit`.

Every packet must end in a decision an operator can read in the log: "queued", "ignored" or
"dropped" with a reason, an admin command, or a MalformedPacket (which the radio logs as
"ignored malformed packet"). Nothing else may escape: the daemon must never crash on what a
mesh (or a buggy library) hands it.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from meshtastic.protobuf import portnums_pb2

from meshbot.app.compose import build_daemon
from meshbot.core import limits
from meshbot.core.clock import VirtualClock
from meshbot.core.config import load_config
from meshbot.radios.packets import MalformedPacket, parse_packet
from meshbot.service.daemon import Daemon
from meshbot.storage.store import Store
from tests.fakes import ALICE, BOB, BOT_NUM, FakeModel, FakeRadio

CAROL = 0x0CA0_0100
BATCH = 10
EXAMPLES = 1_000
MIN_PACKETS = 10_000
DECISIONS = ("queued", "held", "ignored", "dropped", "admin")  # "held": a part waiting for the rest

# -- strategies ---------------------------------------------------------------------------------
# Hypothesis favours zeros (its simplest data), so every "rare" branch below is the *highest* roll.
# Strategies are built once, here: building them inside the composites costs more than the daemon.
ROLL = {n: st.integers(0, n - 1) for n in (3, 10, 20, 50)}


@st.composite
def _weighted(draw: st.DrawFn, common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> Any:
    """A `common` value 90% of the time, a `rare` one otherwise."""
    # Not one_of(common, common, rare): one_of flattens a nested one_of, so `rare`'s many
    # branches would outweigh `common`.
    return draw(common) if draw(ROLL[10]) < 9 else draw(rare)


def _rare(draw: st.DrawFn, n: int) -> bool:
    """True one time in `n`."""
    return draw(ROLL[n]) == n - 1


WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ANY_INT = st.one_of(
    st.integers(0, 2**32 - 1), st.integers(-(2**31), -1), st.integers(2**32, 2**80), st.integers(-(2**80), -(2**31))
)
ODD = st.one_of(ANY_INT, WRONG)
NODES = _weighted(
    st.sampled_from([ALICE, BOB, CAROL]),
    st.one_of(st.sampled_from([BOT_NUM, limits.BROADCAST_NUM, 0]), st.integers(1, 2**32 - 1)),
)
# Ids from a small pool, so that re-deliveries happen; most packets get an id from their content
# instead (see `packets`): hypothesis favours small integers, so drawn ids would nearly all repeat.
CONTENT_ID = "content"
HEADER = {
    "from": _weighted(NODES, ODD),
    "id": _weighted(st.just(CONTENT_ID), st.one_of(st.integers(1, 40), ODD)),
    "to": _weighted(st.sampled_from([BOT_NUM, limits.BROADCAST_NUM]), ODD),
}
CHANNEL = _weighted(st.integers(0, 7), ODD)
HOPS = st.one_of(st.integers(0, 7), ANY_INT, WRONG)
RADIO_FIELDS = {
    "hopStart": HOPS,
    "hopLimit": HOPS,
    "rxSnr": st.one_of(st.floats(allow_nan=True, allow_infinity=True), WRONG),
    "rxRssi": ODD,
    "rxTime": ODD,
    "viaMqtt": st.one_of(st.booleans(), WRONG),
}
# Firmware 2.7 hands over DMs PKI-encrypted, so most are; a third are legacy (refused) or odd.
PKI_FLAG = _weighted(st.sampled_from([True, True, False]), WRONG)
PORTS = _weighted(
    st.just("TEXT_MESSAGE_APP"),
    st.one_of(
        st.sampled_from(sorted(portnums_pb2.PortNum.keys())), st.integers(-5, 2**33), st.text(max_size=12), st.none()
    ),
)
PREFIXES = st.sampled_from(
    ["", "", "", "!ai ", "!AI: ", "@BOT ", "!aid ", "!pause", "!resume", "!stats", "more", "1/+ ", "2/2 ", "   ", "👍"]
)
TEXTS = st.one_of(
    st.text(min_size=1, max_size=40),
    # Long texts, up to 600 UTF-8 bytes and beyond, built from a repeated piece: drawing hundreds of
    # characters one by one would make generation, not the daemon, the cost of the fuzz.
    st.tuples(st.text(min_size=1, max_size=12), st.integers(1, 150)).map(lambda t: (t[0] * t[1])[:600]),
    st.sampled_from(["what is lora?", "What is LoRa?", "more", "hi", "", "\u200d", "🏳️‍🌈" * 30]),
)
TYPED = st.tuples(PREFIXES, TEXTS).map("".join)  # a question as people (and bots) type it
BINARY = st.tuples(st.binary(min_size=1, max_size=12), st.integers(0, 100)).map(lambda t: (t[0] * t[1])[:600])
MODES = st.sampled_from(["library"] * 7 + ["binary", "odd", "odd"])
ODD_TEXT = st.one_of(
    TYPED, WRONG, st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3).map(lambda s: "hi " + s)
)  # lone surrogates: a str that is not UTF-8
DECODED_EXTRAS = {"emoji": st.one_of(st.just(0), st.integers(0, 2**32), WRONG), "replyId": ODD, "requestId": ANY_INT}


@st.composite
def decoded_dicts(draw: st.DrawFn) -> Any:
    """The `decoded` part, as the library builds it or broken in every way."""
    if _rare(draw, 20):
        return draw(WRONG)
    out: dict[str, Any] = {}
    if not _rare(draw, 50):
        out["portnum"] = draw(PORTS)
    mode = draw(MODES)
    payload = draw(TYPED).encode("utf-8") if mode == "library" else draw(BINARY)
    out["payload"] = draw(WRONG) if _rare(draw, 10) else payload
    try:  # the library sets `text` only when the payload decodes
        out["text"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if mode == "odd":
        out["text"] = draw(ODD_TEXT)
    for key, values in DECODED_EXTRAS.items():
        if _rare(draw, 10):
            out[key] = draw(values)
    return out


@st.composite
def packets(draw: st.DrawFn) -> dict[str, Any]:
    """One packet dict as `meshtastic.receive.text` would publish it, or a broken one."""
    packet: dict[str, Any] = {}
    for key, values in HEADER.items():
        if not _rare(draw, 50):
            packet[key] = draw(values)
    if _rare(draw, 3):
        packet["channel"] = draw(CHANNEL)
    if not _rare(draw, 20):
        packet["decoded"] = draw(decoded_dicts())
    for key, values in RADIO_FIELDS.items():
        if _rare(draw, 3):
            packet[key] = draw(values)
    if not _rare(draw, 10):
        packet["pkiEncrypted"] = draw(PKI_FLAG)
    if packet.get("id") == CONTENT_ID:  # the same packet again is a re-delivery; any other is new
        packet["id"] = zlib.crc32(repr(sorted(packet.items(), key=str)).encode("utf-8", "replace")) or 1
    return packet


# -- the daemon under fuzz ----------------------------------------------------------------------
class ThreadRecords(logging.Handler):
    """Log records emitted on one thread (the one calling `admit`), or on any thread when None."""

    def __init__(self, thread_id: int | None, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.thread_id = thread_id
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.thread_id is None or record.thread == self.thread_id:
            self.records.append(record)


@pytest.fixture
def fuzzed_daemon() -> Iterator[tuple[Daemon, ThreadRecords]]:
    # Limits high enough that many packets get past the rate limiter into the store and queue.
    cfg = load_config(
        overrides={
            "limits.per_node_burst": 1_000_000,
            "limits.per_node_per_hour": 1_000_000,
            "limits.global_burst": 1_000_000,
            "limits.global_per_hour": 1_000_000,
            "limits.admins": [f"!{ALICE:08x}"],
            "policy.channels": [{"index": 0}, {"index": 1, "reply": "dm"}],
        },
        environ={},
    )
    clock = VirtualClock(start=1000.0)
    daemon = build_daemon(cfg, radio=FakeRadio(clock), model=FakeModel(), clock=clock, store=Store(":memory:"))
    daemon.start()
    handler = ThreadRecords(threading.get_ident())
    errors = ThreadRecords(None, logging.ERROR)  # worker, sender, intake: nothing may blow up there
    logger = logging.getLogger("meshbot")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    # A legacy DM is refused with one WARNING per node, later ones at DEBUG (a forger may send thousands):
    # the intake's DEBUG lines are decisions too.
    intake_log = logging.getLogger("meshbot.service.intake")
    intake_log.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.addHandler(errors)
    try:
        yield daemon, handler
    finally:
        daemon.stop(grace_s=1.0)
        logger.removeHandler(handler)
        logger.removeHandler(errors)
        logger.setLevel(old_level)
        intake_log.setLevel(logging.NOTSET)
    assert not errors.records, [r.getMessage() for r in errors.records[:5]]


def judge_one(daemon: Daemon, handler: ThreadRecords, packet: dict[str, Any]) -> str:
    """Push one packet through the inbound path; return the decision the log shows."""
    handler.records.clear()
    try:
        msg = parse_packet(packet, BOT_NUM)
    except MalformedPacket:
        return "malformed"
    try:
        daemon.admit(msg)
    except Exception as exc:  # name the packet: the batch is not shrunk (see `push`)
        raise AssertionError(f"admit crashed on {packet!r}: {exc!r}") from exc
    decisions = [r for r in handler.records if getattr(r, "event", None) in DECISIONS]
    assert decisions, f"no decision logged for {packet!r}: {[r.getMessage() for r in handler.records]}"
    for record in decisions:
        if record.event in ("ignored", "dropped"):
            assert getattr(record, "reason", ""), f"{record.event} without a reason: {record.getMessage()}"
    first = decisions[0]
    return f"{first.event}: {first.reason}" if first.event in ("ignored", "dropped") else str(first.event)


def test_ten_thousand_random_packets_never_crash_and_every_one_is_logged(fuzzed_daemon) -> None:
    daemon, handler = fuzzed_daemon
    outcomes: Counter[str] = Counter()

    # No shrinking: it takes minutes on batches this size, and a failure names its packet anyway.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=st.lists(packets(), min_size=BATCH, max_size=BATCH))
    def push(batch: list[dict[str, Any]]) -> None:
        for packet in batch:
            outcomes[judge_one(daemon, handler, packet)] += 1

    push()
    total = sum(outcomes.values())
    kinds = Counter(outcome.split(":")[0] for outcome in outcomes.elements())
    print(f"fuzzed {total} packets: {dict(kinds)}; most common: {outcomes.most_common(12)}")
    assert total >= MIN_PACKETS
    # The fuzz reached every stage, not only the parser's early exits. ("dropped" depends on how fast
    # the worker drains the queue, so it is not required.)
    assert kinds["malformed"] and kinds["ignored"] and kinds["queued"], kinds


@pytest.mark.parametrize(
    "packet",
    [
        {"from": 2**70, "id": 1, "to": BOT_NUM, "decoded": {"portnum": "TEXT_MESSAGE_APP", "text": "hi there"}},
        {"from": ALICE, "id": 2**64, "to": BOT_NUM, "decoded": {"portnum": "TEXT_MESSAGE_APP", "text": "hi there"}},
        {
            "from": ALICE,
            "id": 9,
            "to": BOT_NUM,
            "channel": 2**70,
            "decoded": {"portnum": "TEXT_MESSAGE_APP", "text": "hi there"},
        },
        {"from": BOB, "id": 10, "to": BOT_NUM, "decoded": {"portnum": "TEXT_MESSAGE_APP", "text": "hi \ud800"}},
    ],
    ids=["sender-over-64-bits", "id-over-64-bits", "channel-over-64-bits", "lone-surrogate-text"],
)
def test_packets_the_fuzz_found_are_refused_with_a_reason(fuzzed_daemon, packet: dict[str, Any]) -> None:
    daemon, handler = fuzzed_daemon
    assert judge_one(daemon, handler, packet).split(":")[0] in ("malformed", "ignored")


def test_a_node_number_beyond_32_bits_is_not_answered(fuzzed_daemon) -> None:
    daemon, handler = fuzzed_daemon
    packet = {
        "from": 2**40 + ALICE,
        "id": 11,
        "to": BOT_NUM,
        "decoded": {"portnum": "TEXT_MESSAGE_APP", "text": "who am i?"},
    }
    # Node numbers are uint32 on the wire: a reply to this one could never be addressed.
    assert judge_one(daemon, handler, packet).split(":")[0] in ("malformed", "ignored")
