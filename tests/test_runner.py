"""How `meshbot run` chooses its radio: a given one, the only serial one, or the virtual mesh."""

from __future__ import annotations

import pytest

from meshbot.app.runner import choose_radio, demo_store_path
from meshbot.core.config import load_config
from meshbot.radios.meshtastic_lib import detect_serial_ports


def test_a_given_radio_is_used_as_is() -> None:
    cfg = load_config(overrides={"radio.host": "10.0.0.5:4403"}, environ={})
    chosen, sim = choose_radio(cfg, force_sim=False)
    assert chosen.radio.host == "10.0.0.5:4403" and not sim


def test_sim_is_forced_on_request() -> None:
    cfg = load_config(overrides={"radio.host": "10.0.0.5"}, environ={})
    assert choose_radio(cfg, force_sim=True)[1] is True


@pytest.mark.skipif(bool(detect_serial_ports()), reason="a serial radio is attached here")
def test_no_radio_means_the_demo_mesh_or_a_clear_failure() -> None:
    assert choose_radio(load_config(environ={}), force_sim=False)[1] is True
    strict = load_config(overrides={"radio.when_no_radio": "fail"}, environ={})
    with pytest.raises(SystemExit, match="no radio found"):
        choose_radio(strict, force_sim=False)


@pytest.mark.parametrize(
    "configured, demo",
    [
        ("meshbot.db", "meshbot-demo.db"),
        ("/var/lib/meshbot/state.sqlite3", "/var/lib/meshbot/state-demo.sqlite3"),
        (":memory:", ":memory:"),
    ],
)
def test_the_demo_keeps_its_state_beside_the_real_store_never_in_it(configured: str, demo: str) -> None:
    assert demo_store_path(configured) == demo
