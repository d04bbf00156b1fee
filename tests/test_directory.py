"""The node directory: merging reports, bounds, forgetting, the store across a restart, distances (pure and service)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshbot.core.config import MeshDirectoryConfig
from meshbot.core.directory import (
    DeviceMetrics,
    Heard,
    NodeRecord,
    NodeReport,
    NodeUser,
    Position,
    bearing_deg,
    distance_m,
    distance_text,
    find,
    heard_within,
)
from meshbot.core.geo import compass
from meshbot.service.directory import MeshDirectory
from meshbot.storage.directory import DirectoryTable, record_json, record_of
from meshbot.storage.store import Store

NOW = 1_800_000_000.0
ZURICH = Position(473_769_000, 85_417_000)  # 47.3769 N, 8.5417 E
WINTERTHUR = Position(474_988_000, 87_237_000)  # about 19 km NE


class Wall:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def directory(store: Store | None = None, wall: Wall | None = None, **cfg) -> MeshDirectory:
    table = DirectoryTable(store) if store is not None else None
    return MeshDirectory(MeshDirectoryConfig(**cfg), table, wall or Wall())


def test_distances_and_bearings() -> None:
    assert 18_000 < distance_m(ZURICH, WINTERTHUR) < 20_000
    assert compass(bearing_deg(ZURICH, WINTERTHUR)) == "NE"
    assert compass(bearing_deg(WINTERTHUR, ZURICH)) == "SW"
    assert distance_text(ZURICH, WINTERTHUR) == "19 km"


def test_a_coarse_position_gives_a_coarse_distance() -> None:
    # 13 bits: the node shared a spot rounded to a grid about 5.8 km wide; the distance says so.
    coarse = Position(WINTERTHUR.latitude_i & ~((1 << 19) - 1), WINTERTHUR.longitude_i & ~((1 << 19) - 1), None, 13)
    assert 2_000 < coarse.uncertainty_m < 3_000
    text = distance_text(ZURICH, coarse)
    assert text.startswith("~") and "±" in text
    assert Position(1, 1).uncertainty_m == 0  # full precision, no slack invented


def test_reports_merge_newest_wins_and_partial_metrics_keep_the_rest() -> None:
    d = directory()
    d.note(NodeReport(7, heard=Heard(NOW - 60, snr=6.5, rssi=-90, hops=1)))
    d.note(NodeReport(7, user=NodeUser("BRVO", "Bravo Base")))
    d.note(NodeReport(7, device=DeviceMetrics(battery_level=87, voltage=3.98, at=NOW - 50)))
    d.note(NodeReport(7, device=DeviceMetrics(channel_utilization=12.5, at=NOW - 40)))
    d.note(NodeReport(7, position=ZURICH))
    d.note(NodeReport(7, heard=Heard(NOW - 30, via_mqtt=True)))  # no signal figures: the last ones stay
    rec = d.record(7)
    assert rec is not None and rec.user is not None and rec.user.short_name == "BRVO"
    assert rec.device == DeviceMetrics(battery_level=87, voltage=3.98, channel_utilization=12.5, at=NOW - 40)
    assert rec.heard is not None and rec.heard.at == NOW - 30 and rec.heard.snr == 6.5
    d.note(NodeReport(7, heard=Heard(NOW - 3600, snr=-10)))  # older news does not overwrite newer
    assert d.record(7).heard.snr == 6.5  # type: ignore[union-attr]
    assert find(d.records(), "bravo base") is rec or find(d.records(), "BRVO") == d.record(7)
    assert find(d.records(), "!00000007") == d.record(7)
    assert find(d.records(), "nobody") is None


def test_bounded_by_max_nodes_longest_unheard_goes_first_never_our_own() -> None:
    d = directory(max_nodes=3)
    d.note(NodeReport(1, user=NodeUser("BOT"), is_self=True))  # heard never: the oldest of all, but kept
    for node in range(10, 20):
        d.note(NodeReport(node, heard=Heard(NOW - 100 + node)))
    kept = {r.node for r in d.records()}
    assert kept == {1, 18, 19}
    assert d.own() is not None and d.own().node == 1  # type: ignore[union-attr]


def test_unheard_for_ttl_days_is_forgotten() -> None:
    wall = Wall()
    d = directory(wall=wall, ttl_days=1)
    d.note(NodeReport(5, heard=Heard(NOW - 10)))
    d.note(NodeReport(6, heard=Heard(NOW - 2 * 86400)))
    assert d.forget_stale() == 1
    assert [r.node for r in d.records()] == [5]
    assert heard_within(d.records(), NOW, 3600) == 1


def test_the_directory_survives_a_restart(tmp_path) -> None:
    path = str(tmp_path / "state.db")
    with Store(path) as store:
        d = directory(store)
        d.note(NodeReport(1, user=NodeUser("BOT", "meshbot"), is_self=True))
        d.note(NodeReport(9, heard=Heard(NOW - 5, snr=-3.25, hops=2), position=ZURICH, user=NodeUser("ALI")))
        d.stop()
    with Store(path) as store:
        again = directory(store)
        assert again.record(9) == d.record(9)
        assert again.own() is not None and again.own().node == 1  # type: ignore[union-attr]
        assert again.short_name_of(9) == "ALI"


def test_evicted_nodes_leave_the_store(tmp_path) -> None:
    with Store(str(tmp_path / "s.db")) as store:
        d = directory(store, max_nodes=2)
        for node in (1, 2, 3):
            d.note(NodeReport(node, heard=Heard(NOW + node)))
        d.flush()
        assert sorted(r.node for r in DirectoryTable(store).load()) == [2, 3]


_positions = st.builds(
    Position,
    st.integers(-900_000_000, 900_000_000),
    st.integers(-1_800_000_000, 1_800_000_000),
    st.none() | st.integers(-100, 9000),
    st.integers(1, 32),
    st.floats(0, NOW),
)
_reports = st.builds(
    NodeReport,
    st.integers(1, 40),
    heard=st.none()
    | st.builds(
        Heard, st.floats(NOW - 1e6, NOW), st.none() | st.floats(-20, 15), st.none(), st.none() | st.integers(0, 7)
    ),
    user=st.none() | st.builds(NodeUser, st.text(max_size=4), st.text(max_size=30)),
    position=st.none() | _positions,
    device=st.none()
    | st.builds(DeviceMetrics, st.none() | st.integers(0, 101), st.none() | st.floats(0, 5), at=st.floats(0, NOW)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_reports, max_size=60), st.integers(1, 10))
def test_never_over_max_nodes_and_records_round_trip(reports: list[NodeReport], max_nodes: int) -> None:
    d = directory(max_nodes=max_nodes)
    for report in reports:
        d.note(report)
        assert len(d) <= max_nodes
    for record in d.records():
        assert record_of(record_json(record)) == record
        if record.position is not None:
            assert isinstance(record.position.latitude_i, int)  # kept as the node sent it


def test_records_sort_most_recently_heard_first() -> None:
    d = directory()
    d.note(NodeReport(1, heard=Heard(NOW - 50)))
    d.note(NodeReport(2, heard=Heard(NOW - 5)))
    d.note(NodeReport(3))
    assert [r.node for r in d.records()] == [2, 1, 3]
    assert NodeRecord(3).short_name == "!00000003"


def test_which_questions_are_about_the_mesh() -> None:
    from meshbot.core.mesh_facts import Topic, classify

    brvo = NodeRecord(7, user=NodeUser("BRVO", "Bravo Base"))
    assert classify("how far can a mesh reach?", []).about_mesh is False
    assert classify("what is solar power?", []).about_mesh is False
    assert classify("who invented radio?", []).about_mesh is False
    assert classify("how far is BRVO?", [brvo]).topics == {Topic.NEAR}
    assert classify("who is around?", []).topics == {Topic.AROUND}
    assert classify("is the channel busy?", []).topics == {Topic.LOAD}
    assert classify("what is the battery of BRVO?", [brvo]).nodes == (brvo,)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_reports, max_size=40),
    st.integers(32, 400),
    st.sampled_from(["who is around?", "battery?", "is it busy?"]),
)
def test_the_mesh_block_keeps_to_its_token_budget(reports: list[NodeReport], budget: int, question: str) -> None:
    from meshbot.core.mesh_facts import classify, fact_lines, mesh_block, tokens_of

    d = directory()
    for report in reports:
        d.note(report)
    lines = fact_lines(classify(question, []), d.records(), 1, NOW, locations=True, is_dm=False)
    block = mesh_block(lines, budget)
    assert block is None or tokens_of(block) <= budget + 2  # each line rounded up on its own
