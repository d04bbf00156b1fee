"""Shared by the virtual mesh tests: small topologies, and a fixture that runs meshes and stops them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.topology import parse_topology

BOT = 0x0BB0_0001


def topology(nodes: list[tuple[str, str, list[str]]], *, links: tuple[dict, ...] = (), **mesh: Any):
    """Nodes as (name, role, neighbours); the bot gets !0bb00001, the others !0a0000NN."""
    specs = [
        {"name": name, "num": BOT if role == "bot" else 0x0A00_0000 + i, "role": role, "neighbours": nbs}
        for i, (name, role, nbs) in enumerate(nodes)
    ]
    settings = {"seed": 1, "modem_preset": "SHORT_FAST", "region": "US", **mesh}
    return parse_topology({"mesh": settings, "nodes": specs, "links": list(links)})


def chain(length: int, **mesh: Any):
    """N0 (a handset) - N1 - ... - the bot at the far end; the middle nodes are relays."""
    names = [f"N{i}" for i in range(length)]
    roles = ["handset"] + ["relay"] * (length - 2) + ["bot"]
    return topology([(n, r, names[i + 1 : i + 2]) for i, (n, r) in enumerate(zip(names, roles, strict=False))], **mesh)


# Most tests run the mesh in manual mode: a VirtualClock that moves only when the test runs the
# mesh, so every draw of loss and contention is deterministic. Tests with a TCP client run it
# threaded on a ScaledClock, faster than real time.
@pytest.fixture
def meshes() -> Iterator[Callable[..., VirtualMesh]]:
    made: list[VirtualMesh] = []

    def make(topo, *, manual: bool = True, announce: bool = False) -> VirtualMesh:
        mesh = VirtualMesh(topo, manual=manual)
        mesh.start(announce=announce)
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.stop()
