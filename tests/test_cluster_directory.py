"""Several workers, one node directory: what one worker hears, the others know after the next save (real Redis)."""

from __future__ import annotations

import time

from meshbot.cluster.directory import SharedDirectoryTable
from meshbot.cluster.shared import Shared
from meshbot.core.config import ClusterConfig, MeshDirectoryConfig
from meshbot.core.directory import DeviceMetrics, Heard, NodeReport, NodeUser
from meshbot.service.directory import MeshDirectory
from tests.redis_support import RedisServer

BRAVO, CAROL = 0x0B5A_0042, 0x0CA0_0001


def worker(server: RedisServer, name: str) -> MeshDirectory:
    shared = Shared(ClusterConfig(redis_url=server.url, worker_id=name, group="g"))
    return MeshDirectory(MeshDirectoryConfig(), SharedDirectoryTable(shared))


def test_what_one_worker_hears_the_other_knows(redis_server: RedisServer) -> None:
    a, b = worker(redis_server, "a"), worker(redis_server, "b")
    now = time.time()
    a.note(NodeReport(BRAVO, Heard(now - 10, 6.5, -80, 1), NodeUser("BRVO", "Bravo Base")))
    a.note(NodeReport(BRAVO, device=DeviceMetrics(battery_level=87, at=now - 5)))
    b.note(NodeReport(CAROL, Heard(now - 3, 2.0, -99, 2), NodeUser("CARL")))
    b.note(NodeReport(BRAVO, Heard(now - 1, -3.0, -110, 3)))  # b heard BRVO later, through another gateway
    a.flush()
    b.flush()  # reads a's records first: b's write of BRVO keeps a's telemetry
    bravo = b.find("BRVO")
    assert bravo is not None and bravo.device is not None and bravo.device.battery_level == 87  # a's telemetry
    assert bravo.heard is not None and bravo.heard.at == now - 1  # b's own, newer hearing kept
    a.flush()  # nothing new of its own to write, but it learns what b heard
    assert a.find("CARL") is not None
    assert a.find("BRVO").heard.at == now - 1  # type: ignore[union-attr]
    # A worker started later begins with what the others know.
    c = worker(redis_server, "c")
    assert {r.node for r in c.records()} == {BRAVO, CAROL}
