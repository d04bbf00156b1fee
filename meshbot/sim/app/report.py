"""The mesh report: what went on air, who used how much of it, and what the clients saw. Pure.

`NodeStats` are the air's counters for one node; `build_report` adds what each node's client sent
and received (ACKs, NAKs by reason, deliveries) and `render_report` prints the table.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshbot.core.ids import node_id
from meshbot.sim.node.records import HeardPacket, SentPacket
from meshbot.sim.rules.duty import AirtimeWindow, DutyCycle
from meshbot.sim.rules.firmware import OK

FRAME_KINDS = ("own", "relay", "ack", "nodeinfo")
TEXT_PORT = "TEXT_MESSAGE_APP"


@dataclass
class NodeStats:
    """One node's radio counters, kept by the air."""

    frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FRAME_KINDS, 0))
    airtime_s: float = 0.0
    decoded: int = 0  # frames heard and decoded (duplicates included)
    duplicates: int = 0
    collisions: int = 0
    lost: int = 0  # to the link's loss probability
    relays_cancelled: int = 0
    hop_limit_stops: int = 0  # packets for others heard with no hops left
    duty_refused: int = 0
    queue_full: int = 0
    duty_percent: float = 0.0  # rolling hour, at snapshot time
    duty_peak_percent: float = 0.0
    duty_limit_percent: float = 100.0
    heard_s: float = 0.0  # air time the node heard busy, its own frames included

    def count_frame(self, kind: str, airtime_s: float) -> None:
        """Count one frame this node put on air."""
        self.frames[kind] = self.frames.get(kind, 0) + 1
        self.airtime_s += airtime_s

    def snapshot(self, duty: DutyCycle, heard: AirtimeWindow, now: float) -> NodeStats:
        """A copy with the duty-cycle and utilisation figures as of `now`."""
        return dataclasses.replace(
            self,
            frames=dict(self.frames),
            duty_percent=duty.window.percent(now),
            duty_peak_percent=duty.window.peak_percent,
            duty_limit_percent=duty.limit_percent,
            heard_s=heard.lifetime_s,
        )


@dataclass(frozen=True)
class NodeRow:
    """One node's line of the report."""

    name: str
    node_id: str
    role: str
    frames: int
    relays: int
    airtime_s: float
    duty_percent: float
    duty_peak_percent: float
    duty_limit_percent: float
    utilisation_percent: float
    texts_sent: int
    texts_received: int


@dataclass(frozen=True)
class MeshReport:
    """A summary of a mesh run. `wall_s`, `cpu_s` and `speedup` vary by machine; the rest is seeded."""

    sim_s: float
    nodes: tuple[NodeRow, ...]
    frames: Mapping[str, int]
    airtime_s: float
    utilisation_mean_percent: float
    utilisation_max_percent: float
    texts_sent: int
    deliveries: int  # texts handed to a client that they were meant for (DM to it, or a broadcast)
    acks: int  # a destination's ACK reached the sender's client
    implicit_acks: int  # the sender's own node heard its packet relayed
    naks: Mapping[str, int]
    collisions: int
    lost: int
    duplicates: int
    relays_cancelled: int
    duty_refused: int
    queue_full: int
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def frames_total(self) -> int:
        """Every frame put on air."""
        return sum(self.frames.values())

    @property
    def frames_per_hour(self) -> float:
        """Frames on air per simulated hour."""
        return self.frames_total * 3600.0 / self.sim_s if self.sim_s > 0 else 0.0

    @property
    def speedup(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.sim_s / self.wall_s if self.wall_s > 0 else 0.0

    def seeded(self) -> dict[str, Any]:
        """Everything a seed and the inputs decide (no wall-clock or CPU figures), for comparisons."""
        out = dataclasses.asdict(self)
        for key in ("wall_s", "cpu_s"):
            out.pop(key)
        return out


def build_report(
    *,
    names: Mapping[int, str],
    roles: Mapping[int, str],
    stats: Mapping[int, NodeStats],
    sent: Mapping[int, Iterable[SentPacket]],
    received: Mapping[int, Iterable[HeardPacket]],
    sim_s: float,
    wall_s: float = 0.0,
    cpu_s: float = 0.0,
) -> MeshReport:
    """Combine the air's counters with what every client sent and received."""
    rows, frames, answers = [], Counter[str](), Counter[str]()
    for num, name in names.items():
        st = stats.get(num, NodeStats())
        texts_out = sum(1 for p in sent.get(num, ()) if p.portnum == TEXT_PORT)
        heard = list(received.get(num, ()))
        texts_in = sum(1 for h in heard if h.portnum == TEXT_PORT and h.sender != num)
        answers.update(_answers(num, heard))
        frames.update(st.frames)
        rows.append(
            NodeRow(
                name=name,
                node_id=node_id(num),
                role=roles.get(num, "?"),
                frames=sum(st.frames.values()),
                relays=st.frames.get("relay", 0),
                airtime_s=round(st.airtime_s, 6),
                duty_percent=round(st.duty_percent, 4),
                duty_peak_percent=round(st.duty_peak_percent, 4),
                duty_limit_percent=st.duty_limit_percent,
                utilisation_percent=round(100.0 * st.heard_s / sim_s, 4) if sim_s > 0 else 0.0,
                texts_sent=texts_out,
                texts_received=texts_in,
            )
        )
    utils = [r.utilisation_percent for r in rows] or [0.0]
    totals = {
        k: sum(getattr(s, k) for s in stats.values())
        for k in ("collisions", "lost", "duplicates", "relays_cancelled", "duty_refused", "queue_full")
    }
    naks = {k: v for k, v in sorted(answers.items()) if k not in (_ACK, _IMPLICIT)}
    return MeshReport(
        sim_s=round(sim_s, 6),
        nodes=tuple(rows),
        frames=dict(frames),
        airtime_s=round(sum(s.airtime_s for s in stats.values()), 6),
        utilisation_mean_percent=round(sum(utils) / len(utils), 4),
        utilisation_max_percent=max(utils),
        texts_sent=sum(r.texts_sent for r in rows),
        deliveries=sum(r.texts_received for r in rows),
        acks=answers[_ACK],
        implicit_acks=answers[_IMPLICIT],
        naks=naks,
        wall_s=wall_s,
        cpu_s=cpu_s,
        **totals,
    )


_ACK, _IMPLICIT = "ACK from the destination", "implicit ACK"


def _answers(num: int, heard: Iterable[HeardPacket]) -> Counter[str]:
    """What a client's ACKs and NAKs say: from the destination, implicit (from its own node), or an error."""
    out = Counter[str]()
    for h in heard:
        if h.error is None:
            continue
        out[h.error if h.error != OK else _IMPLICIT if h.sender == num else _ACK] += 1
    return out


def render_report(report: MeshReport) -> str:
    """The report as a plain-text table."""
    lines = [
        f"mesh report: {report.sim_s:.1f} s simulated, {report.frames_total} frames on air "
        f"({report.frames_per_hour:.0f} per simulated hour), {report.airtime_s:.1f} s air time",
        f"{'node':<12} {'id':<10} {'role':<8} {'frames':>6} {'relays':>6} {'air s':>8} "
        f"{'duty %':>13} {'chan util %':>11} {'texts out/in':>12}",
    ]
    for r in report.nodes:
        duty = f"{r.duty_percent:.2f}/{r.duty_limit_percent:g}"
        lines.append(
            f"{r.name[:12]:<12} {r.node_id:<10} {r.role:<8} {r.frames:>6} {r.relays:>6} {r.airtime_s:>8.2f} "
            f"{duty:>13} {r.utilisation_percent:>11.2f} {f'{r.texts_sent}/{r.texts_received}':>12}"
        )
    kinds = ", ".join(f"{k} {report.frames.get(k, 0)}" for k in FRAME_KINDS)
    naks = ", ".join(f"{k} {v}" for k, v in report.naks.items()) or "none"
    lines += [
        f"frames: {kinds}",
        f"channel utilisation: mean {report.utilisation_mean_percent:.2f}%, max {report.utilisation_max_percent:.2f}%",
        f"texts: {report.texts_sent} sent, {report.deliveries} delivered; "
        f"ACKs: {report.acks} from destinations, {report.implicit_acks} implicit; NAKs: {naks}",
        f"air: {report.collisions} collisions, {report.lost} lost to the link, {report.duplicates} duplicates "
        f"suppressed, {report.relays_cancelled} relays cancelled, {report.duty_refused} refused for duty cycle, "
        f"{report.queue_full} dropped on a full queue",
    ]
    if report.wall_s > 0:
        lines.append(
            f"run: {report.wall_s:.1f} s wall, {report.speedup:.1f}x real time, "
            f"{report.cpu_s:.1f} s CPU in this process ({100.0 * report.cpu_s / report.wall_s:.0f}% of one core)"
        )
    return "\n".join(lines)
