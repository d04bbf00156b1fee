"""The virtual mesh's topology files: the loader names what is wrong, and the shipped ones are connected."""

from __future__ import annotations

import pytest

from meshbot.sim.app.topology import TopologyError, bundled_topologies, load_topology, read_topology_text
from tests.mesh_support import BOT, topology

# ----- the topology file ---------------------------------------------------------------------


GOOD_NODE = '[[nodes]]\nname = "BOT"\nnum = 1\nrole = "bot"\n'


@pytest.mark.parametrize(
    "text, named",
    [
        ("[mesh]\nsede = 1\n" + GOOD_NODE, "mesh.sede"),
        (GOOD_NODE + 'nmae = "x"\n', "nodes[0].nmae"),
        ('[mesh]\nmodem_preset = "LONG_FASTER"\n' + GOOD_NODE, "mesh.modem_preset"),
    ],
)
def test_the_loader_names_the_bad_key(tmp_path, text, named):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    assert named in str(caught.value)


def test_the_loader_rejects_an_unknown_neighbour_and_a_missing_bot():
    with pytest.raises(TopologyError, match="neighbour 'Bobb' is not a node"):
        topology([("A", "handset", ["Bobb"]), ("BOT", "bot", [])])
    with pytest.raises(TopologyError, match="exactly one node must have role 'bot'"):
        topology([("A", "handset", [])])


@pytest.mark.parametrize("name", ["demo", "city"])
def test_the_shipped_topologies_load_and_are_connected(name):
    topo = load_topology(name)
    table = topo.link_table()
    reached, todo = {topo.bot.node_num}, [topo.bot.node_num]
    while todo:
        for other in table[todo.pop()]:
            if other not in reached:
                reached.add(other)
                todo.append(other)
    assert reached == {n.node_num for n in topo.nodes}
    assert topo.bot.node_num == BOT


def test_a_topology_is_a_bundled_name_or_a_file(tmp_path):
    assert {"demo", "city"} <= set(bundled_topologies())
    assert len(load_topology("city").nodes) == 20
    path = tmp_path / "mine.toml"
    path.write_text(read_topology_text("demo")[0])
    assert load_topology(str(path)) == load_topology(path) == load_topology("demo")


@pytest.mark.parametrize(
    "source, says",
    [
        ("town", "no topology named 'town': give one of city, demo, mqtt or the path of a .toml file"),
        ("missing/mesh.toml", "missing/mesh.toml: file not found"),
        ("nowhere.toml", "nowhere.toml: file not found"),
    ],
)
def test_an_unknown_topology_is_named_with_what_would_work(source, says):
    with pytest.raises(TopologyError) as caught:
        load_topology(source)
    assert str(caught.value) == says
