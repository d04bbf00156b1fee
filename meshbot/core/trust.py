"""Who is asking, as far as the mesh has proven it: the firmware's rules on sender identity. Pure.

On the mesh, a packet's `from` is whatever its sender wrote. Anyone who holds a channel's key (on the default
channel, everyone) can write any `from`. Only a PKI-encrypted DM proves its sender: it opens only with the key
pair of the node the bot pinned for that `from`. So:

- a text DM that is not PKI-encrypted (a "legacy DM") is refused, as firmware 2.7 does (Router.cpp,
  "Rejecting legacy DM"), unless the operator opts in (`[radio] accept_legacy_dms`, licensed operators);
- what belongs to a person - their DM conversation's memory, its "more" remainder, `!reset`, `!src` - is keyed
  by `conversation_of`, where an unproven DM has a slot of its own and never reaches the proven one;
- admin commands run only from a configured admin's PKI-proven DM (and, when pinned, with that key).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from meshbot.core.domain import Inbound
from meshbot.core.ids import node_id, parse_node_id

TEXT_PORT = "TEXT_MESSAGE_APP"
# The conversation "channel" of a DM the mesh did not prove: channels are 0..7 and a proven DM is None, so a
# legacy DM (accepted only with accept_legacy_dms) never reads or changes the proven DM's memory.
UNPROVEN_DM = 8
_SLOT_SHIFT = 32  # node numbers are 32 bits: a remainder slot puts the conversation above them
_KEY_BYTES = 32


def proven(msg: Inbound) -> bool:
    """True when the mesh proved who sent `msg`: a DM to us that was PKI-encrypted."""
    return msg.is_dm and msg.pki


def is_legacy_dm(msg: Inbound) -> bool:
    """A text DM to us sealed with a channel key (or in the clear): its `from` proves nothing."""
    return msg.is_dm and not msg.pki and msg.portnum == TEXT_PORT


def conversation_of(msg: Inbound) -> tuple[int, int | None]:
    """(node, channel) whose memory, remainder and sources `msg` may use: None for a proven DM."""
    if msg.is_dm:
        return msg.sender, None if msg.pki else UNPROVEN_DM
    return msg.sender, msg.channel


def remainder_slot(msg: Inbound) -> int:
    """Where a "more" remainder is kept: the node for a proven DM, a slot per conversation otherwise.

    Keyed by the node alone, a forged channel "!ai more" under someone's id would broadcast the rest of
    that person's private answer.
    """
    node, channel = conversation_of(msg)
    return node if channel is None else node + ((channel + 1) << _SLOT_SHIFT)


@dataclass(frozen=True)
class AdminEntry:
    """One configured admin: a node, and the public key it must sign with when pinned."""

    node: int
    key: bytes | None = None

    def __str__(self) -> str:
        return node_id(self.node) + (" (key pinned)" if self.key else "")


def parse_admin(text: str) -> AdminEntry:
    """An admin from config: "!a1b2c3d4" or "!a1b2c3d4:BASE64KEY"; ValueError naming what is wrong."""
    ident, sep, key_text = text.partition(":")
    node = parse_node_id(ident)
    if not sep:
        return AdminEntry(node)
    try:
        key = base64.b64decode(key_text.strip(), validate=True)
    except binascii.Error:
        raise ValueError(f"admin {ident}: the key after ':' is not base64") from None
    if len(key) != _KEY_BYTES:
        raise ValueError(f"admin {ident}: a public key is {_KEY_BYTES} bytes of base64, got {len(key)}")
    return AdminEntry(node, key)


def admins_of(entries: tuple[str, ...]) -> dict[int, bytes | None]:
    """Node -> pinned key (None: any key the mesh pinned) for `[limits] admins`."""
    return {entry.node: entry.key for entry in map(parse_admin, entries)}


def is_admin(msg: Inbound, admins: dict[int, bytes | None]) -> bool:
    """True when `msg` may run an admin command: a configured admin's PKI-proven DM, with their pinned key."""
    if not proven(msg) or msg.sender not in admins:
        return False
    pinned = admins[msg.sender]
    return pinned is None or (msg.sender_key is not None and msg.sender_key == pinned)


class OncePerNode:
    """Remembers the nodes already told about (bounded), so a flood of refusals logs one line per node."""

    def __init__(self, capacity: int = 4096) -> None:
        self._nodes: dict[int, None] = {}
        self._capacity = capacity

    def first(self, node: int) -> bool:
        """True the first time `node` is seen (since it was last forgotten for room)."""
        if node in self._nodes:
            return False
        self._nodes[node] = None
        if len(self._nodes) > self._capacity:
            del self._nodes[next(iter(self._nodes))]
        return True
