"""The real meshtastic library against the virtual node: which channel is the mesh's default public one, and
the node DB's short names, as the daemon's policy and asker line read them."""

from __future__ import annotations

import pytest

from meshbot.core.config import RadioConfig
from meshbot.radios.meshtastic_lib import MeshtasticRadio
from meshbot.radios.nodedb import preset_channel_name
from meshbot.sim.node.node import VirtualNode

BOT = 0x0BB0_0001
ALICE = 0x0A11_CE00


def connect(node: VirtualNode, no_nodes: bool = True) -> MeshtasticRadio:
    radio = MeshtasticRadio(RadioConfig(host=f"127.0.0.1:{node.port}", connect_timeout_s=10, no_nodes=no_nodes))
    radio.start(lambda msg: None, lambda event: None)
    return radio


@pytest.mark.parametrize(
    ("names", "public"),
    [
        (("",), {0}),  # the preset's default name with the default key: LongFast/AQ==
        (("LongFast", "Ops"), {0}),  # named after the preset explicitly; "Ops" is a group's own
        (("Demo",), set()),  # the demo mesh: its own primary channel, answered with the default config
    ],
)
def test_the_default_public_channel_is_recognised(names: tuple[str, ...], public: set[int]) -> None:
    with VirtualNode(BOT, modem_preset="LONG_FAST", channel_names=names) as node:
        radio = connect(node)
        try:
            assert radio.local_node().public_channels == frozenset(public)
        finally:
            radio.close()


def test_preset_channel_names() -> None:
    assert preset_channel_name("LONG_FAST") == "LongFast"
    assert preset_channel_name("SHORT_TURBO") == "ShortTurbo"


def test_the_node_db_gives_short_names() -> None:
    with VirtualNode(BOT, peers=[(ALICE, "Alice Handheld", "ALI")]) as node:
        radio = connect(node, no_nodes=False)
        try:
            assert radio.short_name_of(ALICE) == "ALI"
            assert radio.short_name_of(0x1234) is None
        finally:
            radio.close()
