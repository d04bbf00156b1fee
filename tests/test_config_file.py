"""Which config file a command reads (--config, $MESHBOT_CONFIG, /etc/meshbot/meshbot.toml), and the [sim] section."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbot.app.cli import main
from meshbot.app.configfile import DEFAULT_CONFIG_PATHS, config_path, example_text
from meshbot.core.config import ConfigError, load_config


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("flag", "env", "etc"):
        made[name] = tmp_path / f"{name}.toml"
        made[name].write_text("", encoding="utf-8")
    return made


def test_the_deployed_path_is_a_default() -> None:
    assert Path("/etc/meshbot/meshbot.toml") in DEFAULT_CONFIG_PATHS


def test_flag_then_env_then_the_first_default_that_exists(files: dict[str, Path], tmp_path: Path) -> None:
    defaults = [tmp_path / "absent.toml", files["etc"]]
    env = {"MESHBOT_CONFIG": str(files["env"])}
    assert config_path(files["flag"], environ=env, defaults=defaults) == files["flag"]
    assert config_path(None, environ=env, defaults=defaults) == files["env"]
    assert config_path(None, environ={}, defaults=defaults) == files["etc"]
    assert config_path(None, environ={"MESHBOT_CONFIG": ""}, defaults=defaults) == files["etc"]


def test_no_file_anywhere_means_the_built_in_defaults(tmp_path: Path) -> None:
    assert config_path(None, environ={}, defaults=[tmp_path / "absent.toml", tmp_path]) is None


def test_an_unreadable_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}: cannot read"):
        load_config(tmp_path, environ={})  # a directory where the file should be


def test_the_sim_topology_comes_from_the_file_or_the_documented_variable(tmp_path: Path) -> None:
    assert load_config(environ={}).sim.topology == "demo"
    path = tmp_path / "meshbot.toml"
    path.write_text('[sim]\ntopology = "city"\n', encoding="utf-8")
    assert load_config(path, environ={}).sim.topology == "city"
    env = {"MESHBOT_SIM_TOPOLOGY": "/srv/mesh/home.toml"}
    assert load_config(path, environ=env).sim.topology == "/srv/mesh/home.toml"
    with pytest.raises(ConfigError, match="sim.topology"):
        load_config(environ={"MESHBOT_SIM_TOPOLOGY": ""})


def test_config_example_prints_the_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "example"]) == 0
    printed = capsys.readouterr().out
    assert printed == example_text() and "[sim]" in printed and "[radio]" in printed


def test_config_check_says_which_file_it_read(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(files["flag"])]) == 0
    assert capsys.readouterr().out.startswith(f"config OK: {files['flag']}\n")
