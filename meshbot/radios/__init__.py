"""Radio transports: how meshbot reaches the mesh. Each module here implements `core.domain.Radio`.

`TRANSPORTS` maps `[radio] transport` to a factory `(cfg, store, clock) -> Radio`. A new transport is one
module in this folder and one line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshbot.core.registry import Registry

if TYPE_CHECKING:
    from meshbot.core.config import Config
    from meshbot.core.domain import Clock, Radio
    from meshbot.storage.store import Store

TRANSPORTS = Registry(
    "radio.transport",
    {
        "meshtastic": "meshbot.radios.meshtastic_lib:from_config",
        "mqtt": "meshbot.radios.mqtt.transport:from_config",
    },
)


def make_radio(cfg: Config, store: Store, clock: Clock) -> Radio:
    """The radio transport `[radio] transport` names, built from the config."""
    factory = TRANSPORTS.load(cfg.radio.transport)
    radio: Radio = factory(cfg, store, clock)
    return radio
