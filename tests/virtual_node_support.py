"""Shared by the virtual node tests: the node, the library's client and a raw client, and their fixtures."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Iterator

import pytest
from meshtastic.protobuf import mesh_pb2
from meshtastic.tcp_interface import TCPInterface
from pubsub import pub

from meshbot.core import limits
from meshbot.core.clock import VirtualClock
from meshbot.sim import VirtualNode
from meshbot.sim.rules.framing import FrameDecoder, encode_frame

BOT = 0x0B07B07A
ALICE = 0xA11CE001
BOB = 0x0B0B0002
PEERS = [(ALICE, "Alice Handheld", "ALI"), (BOB, "Bob Base", "BOB")]
WAIT = 5.0  # real seconds a test waits for something that normally takes milliseconds

# pypubsub holds listeners weakly and is global: module-level functions feeding queues.
_texts: queue.Queue = queue.Queue()
_lost: queue.Queue = queue.Queue()


def _on_text(packet: dict, interface: object) -> None:
    _texts.put(packet)


def _on_lost(interface: object) -> None:
    _lost.put(interface)


@pytest.fixture
def listeners() -> Iterator[None]:
    for q in (_texts, _lost):
        while not q.empty():
            q.get_nowait()
    pub.subscribe(_on_text, "meshtastic.receive.text")
    pub.subscribe(_on_lost, "meshtastic.connection.lost")
    yield
    pub.unsubscribe(_on_text, "meshtastic.receive.text")
    pub.unsubscribe(_on_lost, "meshtastic.connection.lost")


@pytest.fixture
def clock() -> VirtualClock:
    # Only the test moves it, so the 2 s text rate limit is deterministic.
    return VirtualClock(start=1000.0)


@pytest.fixture
def node(clock: VirtualClock) -> Iterator[VirtualNode]:
    with VirtualNode(
        BOT, peers=PEERS, clock=clock, modem_preset="MEDIUM_FAST", region="EU_868", hop_limit=5, retransmit_s=0.1
    ) as n:
        yield n


@pytest.fixture
def connect(listeners: None) -> Iterator:
    made: list[TCPInterface] = []

    def _connect(n: VirtualNode, *, no_nodes: bool = False) -> TCPInterface:
        iface = TCPInterface(hostname="127.0.0.1", portNumber=n.port, noNodes=no_nodes, timeout=10)
        made.append(iface)
        settled(iface)
        return iface

    yield _connect
    for iface in made:
        iface.close()


def settled(iface: TCPInterface) -> None:
    """Wait until the library's first heartbeat was answered: it writes that from its reader
    thread right after the config download, so a drop before then races with that write."""
    deadline = time.monotonic() + WAIT
    while iface.queueStatus is None:
        assert time.monotonic() < deadline, "the node never answered the heartbeat"
        time.sleep(0.01)


class RawClient:
    """A bare stream-protocol client, for what the library will not send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.decoder = FrameDecoder()
        self.received: list[mesh_pb2.FromRadio] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: mesh_pb2.ToRadio) -> None:
        self.send_raw(encode_frame(message.SerializeToString()))

    def read_until(self, done, timeout: float = WAIT) -> list[mesh_pb2.FromRadio]:
        deadline = time.monotonic() + timeout
        while not any(done(m) for m in self.received):
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("node closed the connection")
            for payload in self.decoder.feed(data):
                message = mesh_pb2.FromRadio()
                message.ParseFromString(payload)
                self.received.append(message)
        return self.received

    def handshake(self, nonce: int = 4242) -> list[mesh_pb2.FromRadio]:
        self.send_raw(bytes([limits.STREAM_START2] * 32))
        self.send(mesh_pb2.ToRadio(want_config_id=nonce))
        return self.read_until(lambda m: m.config_complete_id == nonce)

    def closed_by_node(self, timeout: float = WAIT) -> bool:
        """True once the node closes the connection; raises TimeoutError if it stays open."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_clients() -> Iterator:
    made: list[RawClient] = []

    def _make(n: VirtualNode) -> RawClient:
        client = RawClient(n.port)
        made.append(client)
        return client

    yield _make
    for client in made:
        client.close()
