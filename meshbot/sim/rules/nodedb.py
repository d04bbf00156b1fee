"""What a node learns of other nodes from what it hears (firmware NodeDB::updateFrom, updateUser). Pure."""

from __future__ import annotations

import dataclasses
import logging

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshbot.sim.rules.handshake import Identity

logger = logging.getLogger(__name__)


def learn(
    known: dict[int, Identity],
    packet: mesh_pb2.MeshPacket,
    now_wall: int,
    me: int,
    facts: dict[str, object] | None = None,
) -> None:
    """Update `known` from one heard packet: when and how it was heard, and names and key from a NodeInfo.

    The first public key heard for a node stays: a NodeInfo that would change it is dropped whole
    (NodeDB::updateUser, "Public Key mismatch, dropping NodeInfo"). `facts` are what a Position or Telemetry
    packet told (position, device metrics); a NodeInfo keeps the ones already known.
    """
    num = getattr(packet, "from")
    seen = {
        "snr": packet.rx_snr,
        "hops_away": max(packet.hop_start - packet.hop_limit, 0),
        "last_heard": packet.rx_time or now_wall,
    }
    if packet.decoded.portnum != portnums_pb2.NODEINFO_APP:
        if num in known:
            known[num] = dataclasses.replace(known[num], **seen, **(facts or {}))  # type: ignore[arg-type]
        return
    user = mesh_pb2.User()
    try:
        user.ParseFromString(packet.decoded.payload)
    except Exception:  # protobuf DecodeError: a garbled NodeInfo teaches nothing
        return
    pinned = known[num].public_key if num in known else b""
    if pinned and user.public_key and bytes(user.public_key) != pinned:
        logger.warning("node %08x: Public Key mismatch for %08x, dropping NodeInfo", me, num)
        return
    old = known.get(num)
    kept = {"position": old.position, "device_metrics": old.device_metrics} if old else {}
    key = bytes(user.public_key) or pinned
    known[num] = Identity(num, user.long_name, user.short_name, key, **seen, **kept)  # type: ignore[arg-type]
