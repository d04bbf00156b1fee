"""What the bot answers and what it ignores, as an operator would read the reasons."""

from __future__ import annotations

import pytest

from meshbot.core.config import ChannelRule, PolicyConfig
from meshbot.core.policy import Accept, Ignore, Kind, Policy, cut_to_bytes, match_trigger
from tests.fakes import ALICE, BOB, BOT_NUM, broadcast, dm


@pytest.fixture
def policy() -> Policy:
    # Channel 0 is the default public channel unless the radio says otherwise: enabled here on purpose.
    return Policy(PolicyConfig(channels=(ChannelRule(index=0, public=True),)), BOT_NUM, "BOT")


def reason(decision) -> str:
    assert isinstance(decision, Ignore), decision
    return decision.reason


def test_a_dm_is_answered_to_its_sender_with_ack(policy: Policy) -> None:
    decision = policy.judge(dm("what is lora?"))
    assert isinstance(decision, Accept)
    assert (decision.reply_to, decision.want_ack, decision.question) == (ALICE, True, "what is lora?")


@pytest.mark.parametrize(
    "msg, why",
    [
        (dm("hi", sender=BOT_NUM), "own-packet"),
        (dm("👍", emoji=1), "tapback"),
        (dm(None, payload_len=4), "invalid-utf8"),
        (dm("   \n"), "empty"),
        (dm("hi", portnum="POSITION_APP"), "other-port"),
        (broadcast("!ai hi", to=BOB), "not-for-us"),
    ],
)
def test_ignore_rules(policy: Policy, msg, why: str) -> None:
    assert reason(policy.judge(msg)) == why


def test_a_redelivered_packet_is_a_duplicate(policy: Policy) -> None:
    assert isinstance(policy.judge(dm("hi", packet_id=7)), Accept)
    assert reason(policy.judge(dm("hi", packet_id=7))) == "duplicate"
    # Same id from another node is a different packet.
    assert isinstance(policy.judge(dm("hi", packet_id=7, sender=BOB)), Accept)


def test_a_channel_message_needs_a_trigger(policy: Policy) -> None:
    assert reason(policy.judge(broadcast("nice weather today"))) == "no-trigger"
    decision = policy.judge(broadcast("!ai: what is lora?", packet_id=2))
    assert isinstance(decision, Accept)
    assert decision.question == "what is lora?"
    assert decision.reply_to == 0xFFFFFFFF and decision.reply_channel == 0 and not decision.want_ack


def test_the_short_name_trigger_and_case(policy: Policy) -> None:
    decision = policy.judge(broadcast("@bot, how far does lora reach?"))
    assert isinstance(decision, Accept) and decision.question == "how far does lora reach?"
    assert reason(policy.judge(broadcast("!aid kit", packet_id=3))) == "no-trigger"
    assert reason(policy.judge(broadcast("!ai", packet_id=4))) == "empty"


def test_channel_rules_are_per_channel_and_can_reply_by_dm() -> None:
    cfg = PolicyConfig(channels=(ChannelRule(index=0), ChannelRule(index=2, triggers=("?bot",), reply="dm")))
    policy = Policy(cfg, BOT_NUM, "BOT")
    assert reason(policy.judge(broadcast("!ai hi", channel=1))) == "channel-disabled"
    assert reason(policy.judge(broadcast("!ai hi", channel=2, packet_id=2))) == "no-trigger"
    decision = policy.judge(broadcast("?bot hi", channel=2, packet_id=3))
    assert isinstance(decision, Accept) and (decision.reply_to, decision.want_ack) == (ALICE, True)


def test_dms_can_be_switched_off_and_hops_limited() -> None:
    policy = Policy(PolicyConfig(answer_dms=False), BOT_NUM, "BOT")
    assert reason(policy.judge(dm("hi"))) == "dms-disabled"
    policy = Policy(PolicyConfig(max_hops=1), BOT_NUM, "BOT")
    assert reason(policy.judge(dm("hi", hop_start=5, hop_limit=2))) == "too-far"


def test_more_is_recognised(policy: Policy) -> None:
    decision = policy.judge(dm("More"))
    assert isinstance(decision, Accept) and decision.kind is Kind.MORE


def test_oversize_input_is_cut_on_a_grapheme_boundary() -> None:
    policy = Policy(PolicyConfig(max_input_bytes=10), BOT_NUM, "BOT")
    decision = policy.judge(dm("ab👩‍👩‍👧cdef"))
    assert isinstance(decision, Accept)
    assert decision.question == "ab" and decision.cut_bytes == len("👩‍👩‍👧cdef".encode())


def test_cut_to_bytes_keeps_whole_letters() -> None:
    assert cut_to_bytes("привет", 5) == "пр"
    assert match_trigger("hello", ("!ai",), "X") is None


def test_the_default_public_channel_is_not_answered_unless_enabled() -> None:
    default = Policy(PolicyConfig(), BOT_NUM, "BOT")  # channel 0 listed, but it is LongFast/AQ==
    assert reason(default.judge(broadcast("!ai what is lora?"))) == "public-channel"
    private = Policy(PolicyConfig(), BOT_NUM, "BOT", public_channels=frozenset())  # channel 0 has its own key
    assert isinstance(private.judge(broadcast("!ai what is lora?", packet_id=2)), Accept)
    enabled = Policy(PolicyConfig(channels=(ChannelRule(index=0, public=True),)), BOT_NUM, "BOT")
    assert isinstance(enabled.judge(broadcast("!ai what is lora?", packet_id=3)), Accept)


def test_a_channel_can_be_switched_off() -> None:
    cfg = PolicyConfig(channels=(ChannelRule(index=1, reply="off"),))
    policy = Policy(cfg, BOT_NUM, "BOT", public_channels=frozenset({0}))
    assert reason(policy.judge(broadcast("!ai hi there?", channel=1))) == "channel-disabled"


def test_a_waiting_part_on_a_channel_needs_no_trigger() -> None:
    cfg = PolicyConfig(channels=(ChannelRule(index=1, reply="dm"),))
    policy = Policy(cfg, BOT_NUM, "BOT", public_channels=frozenset({0}))
    part = policy.as_part(broadcast("2/2 and at what range?", channel=1))
    assert isinstance(part, Accept) and part.reply_to == ALICE and part.question == "2/2 and at what range?"
    assert policy.as_part(broadcast("2/2 rest", channel=3)) is None
