"""`MqttRadio`: a `Radio` that joins the mesh through a Meshtastic MQTT broker (paho-mqtt, MQTT 5).

Persistent session (clean start off, QoS 1) so questions published while the bot was away are delivered on
return; paho reconnects forever with capped backoff. Inbound packets are deduplicated across gateways,
decrypted (channel or PKI) and handed on as `Inbound`; answers go out channel- or PKI-encrypted. Here: the
client and its callbacks, the Radio's start and close, housekeeping; sending is in `sending` (a mixin).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from meshbot.core import limits
from meshbot.core.config import Config
from meshbot.core.directory import NodeReport, NodeUser
from meshbot.core.domain import (
    AckStatus,
    Clock,
    Inbound,
    LocalNode,
    RadioEvent,
    RadioUnavailable,
    SendResult,
)
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id
from meshbot.core.keytext import parse_psk_bytes
from meshbot.radios.mqtt import codec
from meshbot.radios.mqtt.codec import Channel
from meshbot.radios.mqtt.identity import Identity, KeyBackend, Keyring, KeyWait, key_ttl_s, resolve_identity
from meshbot.radios.mqtt.inbound import InboundHandler
from meshbot.radios.mqtt.sending import MqttSending
from meshbot.radios.mqtt.state import BoundedTTL, Retransmits
from meshbot.radios.protobufs import config_pb2
from meshbot.storage.keys import KeyStore
from meshbot.storage.store import Store

log = logging.getLogger(__name__)

_TICK_S = 0.25  # housekeeping: ACK waits, held DMs, NodeInfo announcements
_REGIONS = frozenset(config_pb2.Config.LoRaConfig.RegionCode.keys())


class ClusterLink(Protocol):
    """What the transport needs from the shared store when several workers are one bot (meshbot.cluster)."""

    worker_id: str

    def forward_ack(self, request_id: int, error: str, sender: int) -> None: ...
    def listen_acks(self, on_ack: Callable[[int, str, int], None]) -> None: ...


def region_of(root: str) -> str:
    """The LoRa region a topic root names (msh/EU_868 -> EU_868), for the air-time budget; UNSET if none."""
    parts = root.split("/")
    return next((p for p in parts if p in _REGIONS), "UNSET")


class MqttRadio(MqttSending):
    """A `Radio` over an MQTT broker, speaking as one Meshtastic node with its own PKI key pair."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        clock: Clock,
        wall: Callable[[], float] | None = None,
        cluster: ClusterLink | None = None,
        keys: KeyBackend | None = None,
    ) -> None:
        import time

        self._cfg = cfg.mqtt
        # Several workers: each gets a share of the uplinks (MQTT 5 shared subscription), ACKs for a sibling's
        # packets are forwarded to it, and identity and learnt keys come from the shared store.
        self._cluster = cluster
        self._share = f"$share/{cfg.cluster.group}/" if cluster is not None else ""
        self._clock = clock
        self._hop_limit = cfg.mesh.hop_limit or limits.DEFAULT_HOP_LIMIT
        # An answer's ACK through some gateway, if it comes, comes well inside the sender's own timeout.
        self._ack_wait_s = min(self._cfg.ack_wait_s, cfg.mesh.ack_timeout_s * 0.8)
        # A DM whose asker's key never came goes on the channel only when the operator said so (and policy
        # answers that channel there): everyone on the channel reads it.
        self._dm_on_channel = self._cfg.dm_fallback_to_channel and any(
            rule.index == 0 and rule.reply == "channel" for rule in cfg.policy.channels
        )
        self._long_name = self._cfg.long_name or cfg.persona.bot_name
        psk = parse_psk_bytes(self._cfg.psk)
        self.channel = Channel.from_psk(self._cfg.channel, psk)
        self.channel_is_public = codec.is_default_public(self._cfg.channel, psk)
        wall = wall or time.time
        keys = keys or KeyStore(store)
        self.identity: Identity = resolve_identity(self._cfg, keys, wall)
        self.keyring = Keyring(keys, self._cfg.max_nodes, key_ttl_s(self._cfg), clock.now, wall)
        # packet id -> on_result: answered by an ACK/NAK, or "handed over" when none comes in time
        self._pending: BoundedTTL[int, Callable[[SendResult], None]] = BoundedTTL(
            4096, self._ack_wait_s, clock.now, on_drop=_handed_over
        )
        # Unanswered DMs go out again, as many times in all as the firmware sends one, inside that wait.
        self._retransmits = Retransmits(self._ack_wait_s / limits.MAX_RETRANSMIT, limits.MAX_RETRANSMIT, clock.now)
        self._key_wait = KeyWait(self.keyring, clock, self._cfg.key_wait_s, self._ask_key)
        self._up = threading.Event()
        self._closing = threading.Event()
        self._was_up = False
        self._next_announce = 0.0
        self._last_announce = -float("inf")
        self._on_event: Callable[[RadioEvent], None] | None = None
        self._inbound = InboundHandler(self, clock, self._cfg.key_wait_s, cfg.radio.accept_legacy_dms)
        self._client = self._make_client()
        self._housekeeper: threading.Thread | None = None

    # -- the MQTT client ------------------------------------------------------------------------------
    def _make_client(self) -> paho.Client:
        client_id = self._cfg.client_id or f"meshbot-{node_id(self.identity.node_num)[1:]}"
        if self._cluster is not None:  # one bot, several clients: each needs its own id, or they kick each other
            client_id = f"{client_id}-{self._cluster.worker_id}"
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if self._cfg.username:
            password = self._cfg.password.get_secret_value() if self._cfg.password else None
            client.username_pw_set(self._cfg.username, password)
        if self._cfg.tls:
            client.tls_set(ca_certs=str(self._cfg.ca_file) if self._cfg.ca_file else None)
        client.reconnect_delay_set(1, int(self._cfg.max_backoff_s))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def describe(self) -> str:
        """Where the broker is, for log lines."""
        return f"mqtt {self._cfg.host}:{self._cfg.port} {self._cfg.root}/2/e/{self._cfg.channel}"

    def report_nodes(self, sink: Callable[[NodeReport], None]) -> None:
        """Send what passes on the broker about nodes to `sink` (the node directory); our own node first."""
        node = self.local_node()
        sink(NodeReport(node.node_num, user=NodeUser(node.short_name, node.long_name), is_self=True))
        self._inbound.on_report = sink

    def start(self, on_packet: Callable[[Inbound], None], on_event: Callable[[RadioEvent], None]) -> None:
        """Connect (retrying forever, until close()) and begin delivering packets."""
        self._inbound.on_packet, self._on_event = on_packet, on_event
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # A worker of several keeps no session: a dead worker's share of the uplinks must go to the live ones
        # at once, not wait in its session. One worker alone keeps its session (questions asked while away).
        props.SessionExpiryInterval = 0 if self._cluster is not None else self._cfg.session_expiry_s
        if self._cluster is not None:
            self._cluster.listen_acks(self._resolve_forwarded)
        log.info("connecting to %s", self.describe(), extra={"event": Event.RADIO_CONNECTING})
        kind = codec.channel_kind(self._cfg.channel, parse_psk_bytes(self._cfg.psk))
        log.info("%s", kind, extra={"event": Event.RADIO_CHANNEL, "public": self.channel_is_public})
        self._client.connect_async(
            self._cfg.host,
            self._cfg.port,
            keepalive=self._cfg.keepalive_s,
            clean_start=self._cluster is not None,
            properties=props,
        )
        self._client.loop_start()  # paho's thread reconnects forever, waits doubling up to max_backoff_s
        while not self._up.wait(0.2):
            if self._closing.is_set():
                raise RadioUnavailable("closed while connecting to the broker")
        self._housekeeper = threading.Thread(target=self._housekeeping, name="meshbot-mqtt", daemon=True)
        self._housekeeper.start()

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._on_connect_fail(client, None, str(reason))
            return
        # Our own publishes need not come back; MQTT 5 forbids noLocal on a shared subscription, and the
        # inbound handler drops our echoes anyway.
        opts = SubscribeOptions(qos=1, noLocal=self._cluster is None)
        topics = codec.subscriptions(self._cfg.root, self._cfg.channel)
        client.subscribe([(self._share + t, opts) for t in topics])
        self._up.set()
        log.info(
            "radio connected: %s as %s (%s), session %s",
            self.describe(),
            node_id(self.identity.node_num),
            self._cfg.short_name,
            "resumed" if flags.session_present else "new",
            extra={"event": Event.RADIO_UP, "node": node_id(self.identity.node_num)},
        )
        if self._was_up and self._on_event is not None:
            self._on_event(RadioEvent.CONNECTED)
        self._was_up = True
        # Announce at once (gateways must know our key before handsets can DM us), but a link that comes and
        # goes gets at most one announcement per announce_min_gap_s (see _tick).
        self._next_announce = 0.0

    def _on_connect_fail(self, _c: paho.Client, _u: Any, why: str | None = None) -> None:
        log.warning(
            "connect to %s failed%s; retrying (waits double up to %.0fs)",
            self.describe(),
            f": {why}" if why else "",
            self._cfg.max_backoff_s,
            extra={"event": Event.RADIO_RETRY},
        )

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self._closing.is_set() or not self._up.is_set():
            return
        self._up.clear()
        log.error("radio down (%s): reconnecting", reason, extra={"event": Event.RADIO_DOWN, "reason": str(reason)})
        if self._on_event is not None:
            self._on_event(RadioEvent.LOST)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            self._inbound.handle(msg.payload, msg.topic)
        except Exception as exc:  # a packet must never take the client thread down
            log.warning(
                "ignored packet on %s: %s", msg.topic, exc, extra={"event": Event.IGNORED, "reason": Reason.MALFORMED}
            )

    def _on_publish(self, *_args: Any) -> None:
        pass  # QoS 1 delivery is paho's; the session resends what the broker has not acknowledged

    # -- Radio -------------------------------------------------------------------------------------------
    def local_node(self) -> LocalNode:
        """Our node as configured: number, names, and the region the topic root names."""
        return LocalNode(
            node_num=self.identity.node_num,
            short_name=self._cfg.short_name,
            long_name=self._long_name,
            region=region_of(self._cfg.root),
            hop_limit=self._hop_limit,
            public_channels=frozenset({0}) if self.channel_is_public else frozenset(),
        )

    # -- housekeeping ------------------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        while not self._clock.wait_for(self._closing, _TICK_S):
            try:
                self._tick()
            except Exception as exc:  # housekeeping must outlive any one failure
                log.error("mqtt housekeeping failed: %s", exc, extra={"event": Event.SEND_ERROR})

    def _tick(self) -> None:
        self._pending.expire()
        if self._up.is_set():  # copies not sent while the broker is away wait for it; they are not used up
            self._retransmit()
        self._inbound.expire_held()
        now = self._clock.now()
        gap_ok = now - self._last_announce >= self._cfg.announce_min_gap_s
        if self._up.is_set() and now >= self._next_announce and gap_ok:
            self._next_announce, self._last_announce = now + self._cfg.nodeinfo_interval_s, now
            self.send_nodeinfo()

    def forget_key(self, node: int) -> bool:
        """Unpin `node`'s public key (an admin's !rekey): its next NodeInfo is pinned."""
        self._key_wait.forget(node)
        return self.keyring.forget(node)

    def wait_up(self, timeout: float) -> bool:
        """Block until connected to the broker; True when it is."""
        return self._up.wait(timeout)

    def close(self) -> None:
        """Stop reconnecting and disconnect (the broker keeps our session for session_expiry_s)."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._up.clear()
        self._client.disconnect()
        self._client.loop_stop()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout=2.0)
        log.info("radio closed", extra={"event": Event.RADIO_CLOSED})


def _handed_over(packet_id: int, on_result: Callable[[SendResult], None]) -> None:
    # No ACK within the wait: the broker has the packet (QoS 1) and some gateway put it on air. Say so rather
    # than time out: a timeout would make the sender publish the same fragment again, a duplicate answer.
    on_result(SendResult(packet_id, AckStatus.IMPLICIT, "NO_ACK_THROUGH_MQTT"))


def from_config(
    cfg: Config, store: Store, clock: Clock, cluster: ClusterLink | None = None, keys: KeyBackend | None = None
) -> MqttRadio:
    """The registry's factory: a radio on the broker that `[mqtt]` names (one worker of several with `cluster`)."""
    return MqttRadio(cfg, store, clock, cluster=cluster, keys=keys)
