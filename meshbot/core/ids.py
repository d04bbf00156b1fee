"""Node ids as Meshtastic users read and write them: `!a1b2c3d4`, and the numbers behind them."""

from __future__ import annotations

_ID_FORMATS = "'!a1b2c3d4', '0xa1b2c3d4' or a decimal node number"
_NODE_NUM_MAX = 0xFFFFFFFF  # node numbers are uint32; this one is the broadcast address


def node_id(num: int) -> str:
    """A node number the way Meshtastic users read it: !a1b2c3d4."""
    return f"!{num & 0xFFFFFFFF:08x}"


def parse_node_id(value: str | int) -> int:
    """A node number from "!a1b2c3d4", "0xa1b2c3d4", "2712847316" or an int; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"bad node id {value!r}: expected {_ID_FORMATS}")
    num = value if isinstance(value, int) else _parse_node_text(value)
    if not 0 < num < _NODE_NUM_MAX:
        raise ValueError(
            f"bad node id {value!r}: a node number is between 1 and 0xfffffffe " "(0xffffffff is the broadcast address)"
        )
    return num


def _parse_node_text(value: str) -> int:
    text = value.strip().lower()
    try:
        if text.startswith("!"):
            digits, base = text[1:], 16
        elif text.startswith("0x"):
            digits, base = text[2:], 16
        else:
            digits, base = text, 10
        # int() alone would also take "+5", "1_000" and spaces; a node id is only digits.
        if not digits or not all(c in "0123456789abcdef"[:base] for c in digits):
            raise ValueError
        return int(digits, base)
    except ValueError:
        raise ValueError(f"bad node id {value!r}: expected {_ID_FORMATS}") from None
