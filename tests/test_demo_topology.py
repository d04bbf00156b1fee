"""`meshbot run` with no radio runs the demo on the topology the config names ([sim] topology,
MESHBOT_SIM_TOPOLOGY): a bundled name or a file; a bad one ends start-up with one line and exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbot.radios.meshtastic_lib import detect_serial_ports
from meshbot.sim.app.topology import read_topology_text
from tests.command_proc import REPO, Command, clean_env, dev_tree

START_S = 60.0  # real seconds for the interpreter and the virtual mesh to come up on a busy machine


def run_demo(tmp_path: Path, topology: str) -> Command:
    """`meshbot run` in `tmp_path` with no radio (forced to the demo should this machine have one)."""
    env = clean_env({"MESHBOT_SIM_TOPOLOGY": topology, "PYTHONPATH": str(REPO)}, tmp_path)
    return Command(dev_tree("run", *(["--sim"] if detect_serial_ports() else [])), tmp_path, env)


@pytest.mark.parametrize("topology, nodes", [("city", 20), ("file", 4)])
def test_the_demo_comes_up_on_the_named_topology(tmp_path: Path, topology: str, nodes: int) -> None:
    if topology == "file":
        topology = str(tmp_path / "mine.toml")
        Path(topology).write_text(read_topology_text("demo")[0], encoding="utf-8")
    with run_demo(tmp_path, topology) as run:
        run.wait_for(run.stderr, rf"mesh up: {nodes} nodes", START_S)
        assert run.interrupt() == 0, run.transcript()
    assert not any("Traceback" in line for line in run.stderr), run.transcript()


@pytest.mark.parametrize(
    "topology, says",
    [
        ("town", "no topology named 'town': give one of city, demo, mqtt or the path of a .toml file"),
        ("nowhere/mesh.toml", "nowhere/mesh.toml: file not found"),
        (
            "{dir}/bad.toml",
            "{dir}/bad.toml: nodes[0].role: Input should be 'bot', 'handset' or 'relay'",
        ),
    ],
)
def test_a_bad_topology_ends_start_up_with_one_line(tmp_path: Path, topology: str, says: str) -> None:
    (tmp_path / "bad.toml").write_text('[[nodes]]\nname = "X"\nnum = 1\nrole = "router"\n', encoding="utf-8")
    with run_demo(tmp_path, topology.format(dir=tmp_path)) as run:
        assert run.finish(START_S) == 1, run.transcript()
    errors = [line for line in run.stderr if " ERROR " in line]
    assert (
        len(errors) == 1
        and f"cannot start: sim.topology (MESHBOT_SIM_TOPOLOGY): {says.format(dir=tmp_path)}" in errors[0]
    ), run.transcript()
    assert not any("Traceback" in line for line in run.stderr), run.transcript()
