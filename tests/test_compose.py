"""The composition root and the registries: names chosen by config, unknown names refused by key."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from meshbot.app.cli import main
from meshbot.app.compose import build_daemon
from meshbot.core.clock import VirtualClock
from meshbot.core.config import ConfigDeprecation, ConfigError, load_config
from meshbot.storage.store import Store
from tests.fakes import FakeModel, FakeRadio


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meshbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_check_accepts_the_registered_names(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, '[model]\nbackend = "llama_cpp"\n[radio]\ntransport = "meshtastic"\n')
    code, out = run_cli(["config", "check", str(path)], capsys)
    assert code == 0, out
    assert "config OK" in out


@pytest.mark.parametrize(
    "text, key",
    [('[model]\nbackend = "nope"\n', "model.backend"), ('[radio]\ntransport = "carrier-pigeon"\n', "radio.transport")],
)
def test_config_check_rejects_an_unknown_name_naming_the_key_and_the_known_ones(
    tmp_path: Path, capsys, text: str, key: str
) -> None:
    code, out = run_cli(["config", "check", str(write(tmp_path, text))], capsys)
    assert code == 2
    assert key in out and "known:" in out
    assert "llama_cpp" in out or "meshtastic" in out


def test_build_daemon_refuses_an_unknown_backend_before_touching_the_radio() -> None:
    cfg = load_config(overrides={"model.backend": "nope"}, environ={})
    radio = FakeRadio(VirtualClock())
    with pytest.raises(ConfigError, match="model.backend"):
        build_daemon(cfg, radio=radio, store=Store(":memory:"))
    assert radio.on_packet is None  # never started


def test_build_daemon_gives_a_whole_daemon_on_a_connected_radio() -> None:
    cfg = load_config(environ={})
    radio = FakeRadio(VirtualClock())
    daemon = build_daemon(cfg, radio=radio, model=FakeModel(), store=Store(":memory:"))
    try:
        assert radio.on_packet is not None and daemon.radio_up.is_set()
        assert daemon.policy.my_node_num == radio.local_node().node_num
    finally:
        daemon.stop(grace_s=0.5)


def test_a_moved_key_still_works_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, '[model]\nbot_name = "hilltop"\n')
    with pytest.warns(ConfigDeprecation, match=r"model\.bot_name .* use persona\.bot_name"):
        cfg = load_config(path, environ={})
    assert cfg.persona.bot_name == "hilltop"


def test_a_moved_env_variable_still_works_and_the_new_name_wins() -> None:
    env = {"MESHBOT_MODEL_SYSTEM_PROMPT": "old", "MESHBOT_PERSONA_BOT_NAME": "new-name"}
    with pytest.warns(ConfigDeprecation, match="MESHBOT_PERSONA_SYSTEM_PROMPT"):
        cfg = load_config(environ=env)
    assert (cfg.persona.system_prompt, cfg.persona.bot_name) == ("old", "new-name")
    both = {"MESHBOT_MODEL_BOT_NAME": "old", "MESHBOT_PERSONA_BOT_NAME": "new"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigDeprecation)
        assert load_config(environ=both).persona.bot_name == "new"


def _importers(root: Path, lib: str) -> set[str]:
    found = set()
    for path in root.rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith((f"import {lib}", f"from {lib} ", f"from {lib}.")):
                found.add(path.relative_to(root).as_posix())
    return found


def test_only_the_llama_backend_imports_llama_cpp_and_only_radios_import_meshtastic() -> None:
    root = Path(__file__).resolve().parents[1] / "meshbot"
    assert _importers(root, "llama_cpp") == {"models/llama.py"}
    outside_sim = {m for lib in ("meshtastic", "pubsub") for m in _importers(root, lib) if not m.startswith("sim/")}
    # The client library and pubsub in the meshtastic transport; the wire definitions once, for every transport.
    assert outside_sim == {"radios/meshtastic_lib.py", "radios/protobufs.py"}
    assert _importers(root, "pubsub") - {"radios/meshtastic_lib.py"} == set()


def test_the_core_imports_nothing_from_the_outer_layers() -> None:
    root = Path(__file__).resolve().parents[1] / "meshbot" / "core"
    outer = ("meshbot.service", "meshbot.storage", "meshbot.radios", "meshbot.models", "meshbot.app", "meshbot.sim")
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not any(f"from {o}" in text or f"import {o}" in text for o in outer), path.name
