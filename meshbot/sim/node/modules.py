"""What a virtual node's firmware modules send and answer: Position, Telemetry, NeighborInfo, traceroute, admin.

A mixin of `VirtualNode`. Broadcasts follow the firmware's defaults (PositionModule 15 min, DeviceTelemetryModule
30 min, NeighborInfoModule 6 h; `broadcast_*` send one now). Device metrics change over time: the battery drains
from a level set by the node's number, channel utilisation is what the air measured. Requests to this node (a
traceroute, a telemetry or position request) are answered as the modules answer them; admin requests from the
node's own client (what the official CLI sends for --info and --export-config) are answered locally.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from meshtastic.protobuf import admin_pb2, mesh_pb2, portnums_pb2, telemetry_pb2

from meshbot.core import limits
from meshbot.core.domain import Clock
from meshbot.sim.air.air import Air
from meshbot.sim.air.scheduler import Scheduler
from meshbot.sim.rules import firmware as fw
from meshbot.sim.rules.handshake import Identity, RadioSettings, channel

# Firmware defaults (Default.h / ModuleConfig): seconds between broadcasts.
POSITION_INTERVAL_S = 900.0
TELEMETRY_INTERVAL_S = 1800.0
NEIGHBORINFO_INTERVAL_S = 21_600.0
DRAIN_PERCENT_PER_HOUR = 1.5  # a handset on battery, screen mostly off
VOLTS_EMPTY, VOLTS_FULL = 3.3, 4.2


class ModulesApi:
    """Position, telemetry, neighbours, traceroute and admin answers. Expects the attributes `VirtualNode` sets up."""

    air: Air
    _own: Identity
    _radio: RadioSettings
    _known: dict[int, Identity]
    _clock: Clock
    _wall: Callable[[], float]
    _ids: fw.PacketIdGenerator
    _lock: threading.RLock
    _scheduler: Scheduler
    _started_at: float
    _battery_start: int
    position_fix: tuple[float, float] | None
    precision_bits: int

    # ----- the node's own figures ----------------------------------------------------------------
    def own_position(self) -> mesh_pb2.Position | None:
        """Our position as PositionModule sends it: rounded to `precision_bits`, with the time."""
        if self.position_fix is None:
            return None
        lat, lon = (round(v * 1e7) for v in self.position_fix)
        bits = self.precision_bits
        if 0 < bits < 32:
            mask = ~((1 << (32 - bits)) - 1) & 0xFFFFFFFF
            # PositionModule: keep the top bits, then centre the value in the cell it stands for.
            half = 1 << (31 - bits)
            lat = _signed((lat & mask) + half)
            lon = _signed((lon & mask) + half)
        pos = mesh_pb2.Position(latitude_i=lat, longitude_i=lon, time=int(self._wall()))
        pos.precision_bits = bits
        pos.location_source = mesh_pb2.Position.LocSource.LOC_MANUAL
        return pos

    def own_device_metrics(self) -> telemetry_pb2.DeviceMetrics:
        """Battery draining with uptime, the channel utilisation the air measured, our own share of it."""
        uptime = max(0.0, self._clock.now() - self._started_at)
        level = max(1, round(self._battery_start - DRAIN_PERCENT_PER_HOUR * uptime / 3600))
        util = self.air.utilisation_percent(self)  # type: ignore[arg-type]  # a VirtualNode is an AirNode
        return telemetry_pb2.DeviceMetrics(
            battery_level=level,
            voltage=round(VOLTS_EMPTY + (VOLTS_FULL - VOLTS_EMPTY) * level / 100, 3),
            channel_utilization=round(util, 2),
            air_util_tx=round(util / 4, 2),
            uptime_seconds=int(uptime),
        )

    # ----- broadcasts -------------------------------------------------------------------------------
    def _packet(self, portnum: int, payload: bytes, to: int = limits.BROADCAST_NUM) -> mesh_pb2.MeshPacket:
        hops = self._radio.hop_limit
        with self._lock:
            packet = mesh_pb2.MeshPacket(to=to, id=self._ids.next(), hop_limit=hops, hop_start=hops)
        setattr(packet, "from", self._own.num)
        packet.relay_node = self._own.num & 0xFF
        packet.priority = mesh_pb2.MeshPacket.Priority.BACKGROUND
        packet.decoded.portnum = portnum  # type: ignore[assignment]
        packet.decoded.payload = payload
        if getattr(self, "ok_to_mqtt", False):
            packet.decoded.bitfield |= 1
        return packet

    def broadcast_position(self) -> bool:
        """PositionModule: our position to everyone; False when we have none."""
        pos = self.own_position()
        if pos is None:
            return False
        self._remember_own(position=pos)
        self.air.transmit(self, self._packet(portnums_pb2.POSITION_APP, pos.SerializeToString()))  # type: ignore[arg-type]
        return True

    def broadcast_telemetry(self) -> None:
        """DeviceTelemetryModule: our device metrics to everyone, and to our own client (the phone sees its node's)."""
        metrics = self.own_device_metrics()
        self._remember_own(device_metrics=metrics)
        telemetry = telemetry_pb2.Telemetry(time=int(self._wall()), device_metrics=metrics)
        packet = self._packet(portnums_pb2.TELEMETRY_APP, telemetry.SerializeToString())
        self.air.transmit(self, packet)  # type: ignore[arg-type]
        mine = mesh_pb2.MeshPacket()
        mine.CopyFrom(packet)
        mine.rx_time = int(self._wall())
        self._to_client(mine)

    def broadcast_neighbors(self) -> None:
        """NeighborInfoModule: the nodes we heard directly (0 hops), with their SNR."""
        with self._lock:
            direct = [n for n in self._known.values() if n.hops_away == 0 and n.last_heard]
        info = mesh_pb2.NeighborInfo(node_id=self._own.num, node_broadcast_interval_secs=int(NEIGHBORINFO_INTERVAL_S))
        for node in direct[:10]:
            info.neighbors.add(node_id=node.num, snr=node.snr)
        self.air.transmit(self, self._packet(portnums_pb2.NEIGHBORINFO_APP, info.SerializeToString()))  # type: ignore[arg-type]

    def start_modules(self, scale: float = 1.0, seed: int | None = None) -> None:
        """Broadcast position, telemetry and neighbours at the firmware's intervals divided by `scale`.

        As after a boot, the first position and telemetry go out within seconds (jittered per node, so floods
        seldom collide); neighbour info once the node has had time to hear its neighbours.
        """
        rng = random.Random(self._own.num if seed is None else seed)
        for interval, send, first in (
            (POSITION_INTERVAL_S, self.broadcast_position, rng.uniform(1.0, 8.0)),
            (TELEMETRY_INTERVAL_S, self.broadcast_telemetry, rng.uniform(4.0, 12.0)),
            (NEIGHBORINFO_INTERVAL_S, self.broadcast_neighbors, rng.uniform(12.0, 20.0)),
        ):
            self._every(interval / scale, send, first)

    def _every(self, interval_s: float, send: Callable[[], object], first_s: float) -> None:
        def tick() -> None:
            send()
            self._scheduler.call_later(interval_s, tick)

        self._scheduler.call_later(first_s, tick)

    def _remember_own(self, **facts: object) -> None:
        import dataclasses

        with self._lock:
            self._own = dataclasses.replace(self._own, **facts)  # type: ignore[arg-type]

    # ----- answering requests -------------------------------------------------------------------------
    def answer_request(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket | None:
        """The reply a module sends to a request for us (want_response): traceroute, telemetry, position."""
        decoded = packet.decoded
        if not decoded.want_response:
            return None
        port = decoded.portnum
        if port == portnums_pb2.TRACEROUTE_APP:
            route = mesh_pb2.RouteDiscovery()
            try:
                route.ParseFromString(decoded.payload)
            except Exception:  # protobuf DecodeError: answer as to an empty request
                route = mesh_pb2.RouteDiscovery()
            route.snr_towards.append(int(round(packet.rx_snr * 4)))  # TraceRouteModule: SNR in quarter dB
            payload = route.SerializeToString()
        elif port == portnums_pb2.TELEMETRY_APP:
            telemetry = telemetry_pb2.Telemetry(time=int(self._wall()), device_metrics=self.own_device_metrics())
            payload = telemetry.SerializeToString()
        elif port == portnums_pb2.POSITION_APP:
            pos = self.own_position()
            if pos is None:
                return None
            payload = pos.SerializeToString()
        else:
            return None
        reply = self._packet(port, payload, to=getattr(packet, "from"))
        reply.decoded.request_id = packet.id
        reply.channel = packet.channel
        reply.priority = mesh_pb2.MeshPacket.Priority.RELIABLE
        return reply

    def answer_admin(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket | None:
        """AdminModule, for our own client: the get_* requests the official CLI makes, answered from our state."""
        if packet.decoded.portnum != portnums_pb2.ADMIN_APP:
            return None
        request = admin_pb2.AdminMessage()
        try:
            request.ParseFromString(packet.decoded.payload)
        except Exception:  # protobuf DecodeError: the firmware ignores it too
            return None
        response = self._admin_response(request)
        if response is None:
            return None
        reply = self._packet(portnums_pb2.ADMIN_APP, response.SerializeToString(), to=self._own.num)
        reply.decoded.request_id = packet.id
        reply.channel = packet.channel
        reply.rx_time = int(self._wall())
        return reply

    def _admin_response(self, request: admin_pb2.AdminMessage) -> admin_pb2.AdminMessage | None:
        kind = request.WhichOneof("payload_variant")
        response = admin_pb2.AdminMessage()
        response.session_passkey = b"meshbot-sim-pass"
        if kind == "get_ringtone_request":
            response.get_ringtone_response = ""
        elif kind == "get_canned_message_module_messages_request":
            response.get_canned_message_module_messages_response = ""
        elif kind == "get_owner_request":
            response.get_owner_response.CopyFrom(self._own.user())
        elif kind == "get_channel_request":
            response.get_channel_response.CopyFrom(channel(request.get_channel_request - 1, self._radio.channel_names))
        elif kind == "get_config_request":
            response.get_config_response.SetInParent()
            if request.get_config_request == admin_pb2.AdminMessage.ConfigType.LORA_CONFIG:
                response.get_config_response.lora.CopyFrom(self._radio.lora())
        elif kind == "get_module_config_request":
            response.get_module_config_response.SetInParent()
        elif kind == "get_device_metadata_request":
            response.get_device_metadata_response.firmware_version = "2.7.26.sim"
            response.get_device_metadata_response.hw_model = mesh_pb2.HardwareModel.PORTDUINO
        else:
            return None
        return response

    # Provided by VirtualNode.
    def _to_client(self, packet: mesh_pb2.MeshPacket, *, airtime_s: float = 0.0) -> None:
        raise NotImplementedError


def _signed(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value
