"""The shipped example config (meshbot/app/example.toml, also at config/meshbot.toml) must load, show the
real defaults, and document every option, so that it cannot drift from meshbot/core/config.py."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from meshbot.app.configfile import example_text
from meshbot.core.config import ChannelRule, Config, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "meshbot" / "app" / "example.toml"
DEPLOYED_PATH = "/etc/meshbot/meshbot.toml"

_HEADER = re.compile(r"^\s*\[\[?\s*([\w.]+)\s*\]\]?\s*$")
_COMMENTED_KEY = re.compile(r"^\s*#\s*(\w+)\s*=")
_ENV_EXAMPLE = re.compile(r"(MESHBOT_[A-Z_]+)=('[^']*'|\S+)")


def _sections() -> dict[str, type[BaseModel]]:
    """Every table the file may hold, with the model that reads it."""
    tables: dict[str, type[BaseModel]] = {}
    for name, field in Config.model_fields.items():
        assert isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        tables[name] = field.annotation
    tables["policy.channels"] = ChannelRule
    return tables


def _commented_keys(text: str) -> dict[str, set[str]]:
    """Keys shown commented out (`# key = ...`), grouped by the table they sit in."""
    found: dict[str, set[str]] = {}
    table = ""
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            table = header.group(1)
            continue
        key = _COMMENTED_KEY.match(line)
        if key and table:
            found.setdefault(table, set()).add(key.group(1))
    return found


def _active_keys(text: str) -> dict[str, set[str]]:
    """Keys really set in the file, grouped by table."""
    data = tomllib.loads(text)
    found = {name: set(body) for name, body in data.items() if isinstance(body, dict)}
    for rule in data.get("policy", {}).get("channels", []):
        found.setdefault("policy.channels", set()).update(rule)
    found.get("policy", set()).discard("channels")
    return found


def _uncomment(text: str, table: str, key: str) -> str:
    """The file with the first `# key = ...` line of `table` uncommented."""
    lines, current = text.splitlines(keepends=True), ""
    for i, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
        elif current == table and re.match(rf"^# {key} = ", line):
            lines[i] = line[2:]
            return "".join(lines)
    raise AssertionError(f"no '# {key} = ...' example under [{table}]")


@pytest.fixture(scope="module")
def text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def test_example_loads_to_exactly_the_defaults() -> None:
    # The file claims to show every default: loading it must change nothing.
    assert load_config(EXAMPLE, environ={}) == Config()


def test_every_option_of_config_is_in_the_example(text: str) -> None:
    active, commented = _active_keys(text), _commented_keys(text)
    missing = [
        f"{table}.{key}"
        for table, model in _sections().items()
        for key in model.model_fields
        if table != "policy" or key != "channels"  # shown as [[policy.channels]] blocks
        if key not in active.get(table, set()) | commented.get(table, set())
    ]
    assert not missing, f"options missing from {EXAMPLE.name}: {missing}"
    assert "policy.channels" in active, "the example must show a [[policy.channels]] block"


def test_example_sets_no_key_that_config_lacks(text: str) -> None:
    known = {table: set(model.model_fields) for table, model in _sections().items()}
    unknown = [f"{table}.{key}" for table, keys in _active_keys(text).items() for key in keys - known.get(table, set())]
    assert not unknown


UNSET_BY_DEFAULT = [
    (table, key)
    for table, model in _sections().items()
    for key, field in model.model_fields.items()
    if not field.is_required() and field.default is None
]


@pytest.mark.parametrize(("table", "key"), UNSET_BY_DEFAULT, ids=[f"{t}.{k}" for t, k in UNSET_BY_DEFAULT])
def test_each_unset_option_example_works_when_uncommented(text: str, tmp_path: Path, table: str, key: str) -> None:
    edited = tmp_path / "meshbot.toml"
    edited.write_text(_uncomment(text, table, key), encoding="utf-8")
    cfg = load_config(edited, environ={})
    assert getattr(getattr(cfg, table), key) is not None


def test_env_override_examples_in_the_header_work(text: str) -> None:
    examples = _ENV_EXAMPLE.findall(text)
    assert len(examples) >= 3
    for name, raw in examples:
        value = shlex.split(raw)[0]
        cfg = load_config(EXAMPLE, environ={name: value})
        assert cfg != Config(), f"{name}={value} changed nothing"


def test_documented_fragment_override_takes_effect() -> None:
    cfg = load_config(EXAMPLE, environ={"MESHBOT_MESH_MAX_FRAGMENT_BYTES": "180"})
    assert cfg.mesh.max_fragment_bytes == 180


def test_docker_and_systemd_read_the_config_from_the_same_place(text: str) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    unit = (ROOT / "deploy" / "meshbot.service").read_text(encoding="utf-8")
    assert re.search(rf"MESHBOT_CONFIG={re.escape(DEPLOYED_PATH)}\b", dockerfile)
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert f"--config {DEPLOYED_PATH}" in exec_start
    assert DEPLOYED_PATH in text


def test_the_repository_copy_is_the_shipped_one() -> None:
    # config/meshbot.toml is what people reading the repository open; `meshbot config example` prints the same.
    assert (ROOT / "config" / "meshbot.toml").read_text(encoding="utf-8") == EXAMPLE.read_text(encoding="utf-8")
    assert example_text() == EXAMPLE.read_text(encoding="utf-8")
