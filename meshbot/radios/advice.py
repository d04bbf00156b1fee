"""What to change on a Meshtastic node that cannot serve, worded for the operator (no `meshtastic` import)."""

from __future__ import annotations

from meshbot.core.domain import CANNOT_TRANSMIT, NO_REGION

ADVICE = {
    CANNOT_TRANSMIT: (
        "the node cannot transmit (its LoRa config has tx_enabled = false): it hears questions but every answer "
        "stays unsent; switch it on with `meshtastic --set lora.tx_enabled true`"
    ),
    NO_REGION: (
        "the node has no LoRa region set (lora.region = UNSET): the firmware keeps its radio off until one is set; "
        "set yours with `meshtastic --set lora.region EU_868` (or US, ANZ, ...)"
    ),
}


def advice(code: str) -> str:
    """The operator's line for a LocalNode.problems code."""
    return ADVICE.get(code, code.replace("-", " "))
