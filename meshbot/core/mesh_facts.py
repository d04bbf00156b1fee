"""Which mesh facts a question needs, as short lines for the prompt's mesh block. Pure.

A question is about the mesh when it names a known node, or asks about nearness, signal, battery, hops, who is
around or channel load. Only the facts of those topics go in, for the nodes it names (or, for "who is around",
the most recently heard), within a token budget. Coordinates never go in: the model gets distances from the
asker, with a direction only in a DM (a channel reply must not let anyone place a node).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from meshbot.core.directory import (
    NodeRecord,
    ago_text,
    bare_words,
    battery_text,
    bearing_deg,
    distance_m,
    distance_text,
    heard_within,
    hops_text,
    node_label,
)
from meshbot.core.geo import compass
from meshbot.core.prompting import BYTES_PER_TOKEN_PLANNED, clean_name


class Topic(enum.Enum):
    """What a mesh question asks about."""

    NEAR = "near"
    SIGNAL = "signal"
    BATTERY = "battery"
    HOPS = "hops"
    AROUND = "around"
    LOAD = "load"


# Words that make a question about the mesh on their own ...
_WORDS: dict[Topic, tuple[str, ...]] = {
    Topic.NEAR: ("near", "nearest", "closest", "nearby"),
    Topic.SIGNAL: ("snr", "rssi"),
    Topic.BATTERY: ("battery", "batteries"),
    Topic.HOPS: ("hops",),
    Topic.AROUND: ("around", "online", "nodes", "anyone", "anybody"),
    Topic.LOAD: ("busy", "utilization", "utilisation", "congested", "airtime"),
}
# ... and words that do only when the question names a known node ("how far is BRVO", not "how far can LoRa reach").
_WITH_A_NODE: dict[Topic, tuple[str, ...]] = {
    Topic.NEAR: ("close", "far", "distance", "away", "km", "miles", "where"),
    Topic.SIGNAL: ("signal", "reception", "strong", "weak", "hear", "heard"),
    Topic.BATTERY: ("charge", "voltage", "volts", "power", "powered"),
    Topic.HOPS: ("hop", "route", "relay", "relays", "direct"),
    Topic.LOAD: ("channel", "load", "traffic"),
}
_ALL_NODE_TOPICS = (Topic.SIGNAL, Topic.BATTERY, Topic.HOPS, Topic.NEAR)
MAX_AROUND = 5
HEAD = "Mesh facts from the node directory (use only these for questions about the mesh):"
TAIL = "End of mesh facts."


@dataclass(frozen=True)
class MeshQuestion:
    """What a question asks about the mesh: the topics and the known nodes it names."""

    topics: frozenset[Topic]
    nodes: tuple[NodeRecord, ...]

    @property
    def about_mesh(self) -> bool:
        """True when the question needs mesh facts."""
        return bool(self.topics or self.nodes)


def classify(question: str, named: Sequence[NodeRecord]) -> MeshQuestion:
    """The topics a question asks about, and the known nodes it names (`named`; the bot's own is left out)."""
    words = bare_words(question)
    nodes = tuple(r for r in named if not r.is_self)
    topics = {t for t, keys in _WORDS.items() if words & set(keys)}
    if nodes:
        topics.update(t for t, keys in _WITH_A_NODE.items() if words & set(keys))
    return MeshQuestion(frozenset(topics), nodes)


def _node_line(record: NodeRecord, topics: frozenset[Topic], asker: NodeRecord | None, ctx: _Ctx) -> str:
    name = clean_name(record.user.short_name if record.user else None) or node_label(record.node)
    long = clean_name(record.user.long_name if record.user else None)
    wanted = topics & set(_ALL_NODE_TOPICS) or set(_ALL_NODE_TOPICS)
    facts = [f"last heard {ago_text(ctx.now - record.last_heard)} ago" if record.heard else "never heard directly"]
    if Topic.BATTERY in wanted:
        battery = battery_text(record.device)
        facts.append(f"battery {battery}" if battery else "battery not reported")
    if Topic.HOPS in wanted:
        facts.append(hops_text(record.heard).replace("hops ?", "hops unknown"))
    if Topic.SIGNAL in wanted:
        snr = record.heard.snr if record.heard else None
        facts.append(f"SNR {snr:.1f} dB" if snr is not None else "SNR unknown")
        rssi = record.heard.rssi if record.heard else None
        if rssi is not None:
            facts.append(f"RSSI {rssi} dBm")
    if Topic.NEAR in wanted and ctx.locations:
        facts.append(_distance(asker, record, ctx.is_dm))
    label = f"{name} ({long})" if long and long != name else name
    return f"- {label}: " + ", ".join(facts) + "."


def _distance(asker: NodeRecord | None, record: NodeRecord, is_dm: bool) -> str:
    if record.position is None:
        return "position not shared"
    if asker is None or asker.position is None:
        return "distance unknown (the asker has shared no position)"
    text = distance_text(asker.position, record.position)
    if is_dm:
        text += f" {compass(bearing_deg(asker.position, record.position))}"
    return f"{text} from the asker"


@dataclass(frozen=True)
class _Ctx:
    now: float
    locations: bool
    is_dm: bool


def fact_lines(
    question: MeshQuestion,
    records: Sequence[NodeRecord],
    asker: int,
    now: float,
    *,
    locations: bool,
    is_dm: bool,
) -> list[str]:
    """The facts the question needs, most important first (the named nodes, then the topic's summary)."""
    by_node = {r.node: r for r in records}
    me = by_node.get(asker)
    ctx = _Ctx(now, locations, is_dm)
    own = next((r for r in records if r.is_self), None)
    peers = [r for r in records if not r.is_self]
    lines = [_node_line(r, question.topics, me, ctx) for r in question.nodes]
    if Topic.LOAD in question.topics:
        lines.append(_load_line(own))
    if Topic.AROUND in question.topics or (Topic.NEAR in question.topics and not question.nodes):
        lines.append(
            f"- Nodes heard: {heard_within(peers, now, 3600)} in the last hour, "
            f"{heard_within(peers, now, 86400)} in the last 24 hours."
        )
        chosen = _nearest(peers, me, asker) if Topic.NEAR in question.topics and locations else peers
        topics = question.topics | {Topic.HOPS}
        lines.extend(_node_line(r, topics, me, ctx) for r in chosen[:MAX_AROUND] if r.node != asker)
    if Topic.BATTERY in question.topics and not question.nodes and own is not None:
        battery = battery_text(own.device)
        lines.append(f"- The bot's own node: battery {battery or 'not reported'}.")
    return lines


def _nearest(peers: list[NodeRecord], me: NodeRecord | None, asker: int) -> list[NodeRecord]:
    if me is None or me.position is None:
        return peers
    here = me.position
    located = [r for r in peers if r.position is not None and r.node != asker]
    return sorted(located, key=lambda r: distance_m(here, r.position))  # type: ignore[arg-type]


def _load_line(own: NodeRecord | None) -> str:
    device = own.device if own is not None else None
    if device is None or device.channel_utilization is None:
        return "- Channel load: unknown (the bot's node has reported no telemetry yet)."
    tx = f", it transmits {device.air_util_tx:.1f}% of the time" if device.air_util_tx is not None else ""
    busy = "busy" if device.channel_utilization >= 25 else "not busy"
    return (
        f"- Channel load: {device.channel_utilization:.1f}% channel utilisation heard by the bot's node ({busy}){tx}."
    )


def tokens_of(text: str) -> int:
    """Prompt tokens a text takes, as the other context blocks estimate them."""
    return math.ceil(len(text.encode()) / BYTES_PER_TOKEN_PLANNED)


def mesh_block(lines: Sequence[str], token_budget: int) -> str | None:
    """The delimited block of as many lines as fit the budget (None: no line fits or none given)."""
    used = tokens_of(HEAD) + tokens_of(TAIL)
    kept = []
    for line in lines:
        cost = tokens_of(line)
        if used + cost > token_budget:
            break
        kept.append(line)
        used += cost
    if not kept:
        return None
    return "\n".join([HEAD, *kept, TAIL])
