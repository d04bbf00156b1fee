"""Config: a bad key or value fails at start-up with a message that names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbot.app.cli import main
from meshbot.core.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meshbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_safe() -> None:
    cfg = load_config(environ={})
    assert cfg.mesh.max_fragment_bytes == 200 and cfg.mesh.max_fragments == 3
    assert cfg.mesh.min_gap_s >= 2.0 and cfg.model.path is None


@pytest.mark.parametrize(
    "toml, named",
    [
        ("[mesh]\nmax_fragment_bytez = 100\n", "mesh.max_fragment_bytez"),
        ("[mesh]\nmax_fragment_bytes = 400\n", "mesh.max_fragment_bytes"),
        ("[mesh]\nmin_gap_s = 0.5\n", "mesh.min_gap_s"),
        ("[radio]\nport = '/dev/ttyUSB0'\nhost = 'x'\n", "port, host"),
        ("[[policy.channels]]\nindex = 9\n", "policy.channels.0.index"),
        ("[log]\nformat = 'xml'\n", "log.format"),
        ("[nonsense]\nx = 1\n", "nonsense"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, toml), environ={})
    assert named in str(err.value)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[mesh\n"), environ={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_env_then_cli_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[mesh]\nmax_fragment_bytes = 150\n[log]\nlevel = 'INFO'\n")
    env = {"MESHBOT_MESH_MAX_FRAGMENT_BYTES": "180", "MESHBOT_LOG_LEVEL": "DEBUG"}
    cfg = load_config(path, {"log.level": "WARNING"}, environ=env)
    assert cfg.mesh.max_fragment_bytes == 180 and cfg.log.level == "WARNING"
    with pytest.raises(ConfigError, match="MESHBOT_BOGUS_X"):
        load_config(path, environ={"MESHBOT_BOGUS_X": "1"})
    with pytest.raises(ConfigError, match="mesh.max_fragments"):
        load_config(path, environ={"MESHBOT_MESH_MAX_FRAGMENTS": "lots"})


def test_config_is_frozen() -> None:
    cfg = load_config(environ={})
    with pytest.raises(Exception):
        cfg.mesh.max_fragments = 9  # type: ignore[misc]


def test_config_check_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESHBOT_CONFIG", raising=False)
    good = write(tmp_path, "[mesh]\nmax_fragments = 2\n")
    assert main(["config", "check", str(good)]) == 0
    assert "config OK" in capsys.readouterr().out
    bad = write(tmp_path, "[queue]\nmax_depth = 0\n")
    assert main(["config", "check", str(bad)]) == 2
    assert "queue.max_depth" in capsys.readouterr().err
