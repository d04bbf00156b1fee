"""Console lines showing what a handset would display, for the demo. Pure string formatting."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from meshbot.core.ids import node_id
from meshbot.sim.node.records import ACK, PENDING, SentPacket
from meshbot.sim.rules.firmware import is_broadcast

ELLIPSIS = "…"


def clock_text(at: dt.datetime | dt.time | float) -> str:
    """``HH:MM:SS`` of a time, or of epoch seconds."""
    if isinstance(at, (int, float)):
        at = dt.datetime.fromtimestamp(at)
    return at.strftime("%H:%M:%S")


def hops_text(hops: int | None) -> str:
    """``direct``, ``1 hop``, ``2 hops``; empty when unknown."""
    if hops is None:
        return ""
    if hops <= 0:
        return "direct"
    return "1 hop" if hops == 1 else f"{hops} hops"


def elide(text: str, max_chars: int | None) -> str:
    """Cut `text` to `max_chars` characters, marking the cut with an ellipsis."""
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[: max(max_chars - 1, 0)] + ELLIPSIS


def format_handset_line(
    *,
    at: dt.datetime | dt.time | float,
    sender: str,
    recipient: str,
    text: str,
    hops: int | None = None,
    size_bytes: int | None = None,
    max_chars: int | None = None,
    note: str = "",
    airtime_s: float | None = None,
) -> str:
    """E.g. ``[12:00:03] BOT → you (2 hops): 1/+ text… (187 B, 0.18 s on air)``; `at` may be epoch seconds."""
    size = len(text.encode("utf-8")) if size_bytes is None else size_bytes
    via = hops_text(hops)
    where = f" ({via})" if via else ""
    tail = f" [{note}]" if note else ""
    air = f", {airtime_s:.2f} s on air" if airtime_s is not None else ""
    one_line = " ".join(text.split("\n"))
    return f"[{clock_text(at)}] {sender} → {recipient}{where}: {elide(one_line, max_chars)} ({size} B{air}){tail}"


def destination_name(to: int, channel: int, *, you: int | None = None, names: Mapping[int, str] | None = None) -> str:
    """``you`` for the viewer, ``#ch0`` for a broadcast, else the node's name or ``!%08x`` id."""
    if is_broadcast(to):
        return f"#ch{channel}"
    if you is not None and to == you:
        return "you"
    return (names or {}).get(to, node_id(to))


def format_sent(
    packet: SentPacket,
    *,
    at: dt.datetime | dt.time | float,
    sender: str = "BOT",
    you: int | None = None,
    names: Mapping[int, str] | None = None,
    hops: int | None = None,
    max_chars: int | None = None,
) -> str:
    """A line for a packet the bot sent, flagged with its NAK reason when it did not go out."""
    text = packet.text if packet.text is not None else f"<{packet.portnum}>"
    note = "" if packet.outcome in (ACK, PENDING) else packet.outcome
    return format_handset_line(
        at=at,
        sender=sender,
        recipient=destination_name(packet.to, packet.channel, you=you, names=names),
        text=text,
        hops=hops,
        size_bytes=len(packet.payload),
        max_chars=max_chars,
        note=note,
    )
