"""The README's first screen and "Talking to the bot" work as printed: every shell command in them parses and
names something that exists (a make target, a console script of this checkout's venv, a file)."""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from meshbot.app.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
# The first screen and the section on talking to the bot: everything before the radio set-up.
FIRST_PART = README.split("\n## On a real radio", 1)[0]


def shell_commands(markdown: str) -> list[str]:
    """Command lines of the code blocks: every line of a ```sh block, and `$ `-prompted lines of the others."""
    commands = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", markdown, flags=re.M | re.S):
        for line in body.splitlines():
            if lang == "sh" and line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
            elif line.startswith("$ "):
                commands.append(line[2:].strip())
    return commands


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(encoding="utf-8"), flags=re.M))


def console_scripts() -> set[str]:
    ours = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])
    theirs = {ep.name for ep in metadata.entry_points(group="console_scripts") if ep.value.startswith("meshtastic")}
    return ours | theirs


def meshtastic_flags() -> set[str]:
    """Every option the installed official CLI defines (its parser is built inside its main)."""
    import meshtastic.__main__ as cli

    return set(re.findall(r"""["'](--[a-z][\w-]*)["']""", Path(cli.__file__).read_text(encoding="utf-8")))


COMMANDS = shell_commands(FIRST_PART)


def test_the_first_part_shows_the_commands_a_newcomer_needs() -> None:
    starts = {" ".join(shlex.split(c, comments=True)[:2]) for c in COMMANDS}
    assert {"make run", "make test", ".venv/bin/meshbot handset", ".venv/bin/meshbot status"} <= starts


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_parses_and_names_an_entry_point_that_exists(command: str) -> None:
    argv = shlex.split(command, comments=True)
    assert argv, command
    program, args = argv[0], argv[1:]
    if program == "make":
        assert set(args) <= make_targets(), command
        return
    assert program.startswith(".venv/bin/"), f"{command}: not runnable as printed from the checkout"
    name = program.removeprefix(".venv/bin/")
    assert name in console_scripts(), f"{command}: {name} is not a console script of this venv"
    if name == "meshbot":
        build_parser().parse_args(args)  # SystemExit (a failed test) if it does not parse
    else:
        flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
        assert flags <= meshtastic_flags(), f"{command}: unknown options {flags - meshtastic_flags()}"


def test_files_the_first_part_names_exist() -> None:
    for path in re.findall(r"`((?:meshbot|config|deploy|docs)/[\w./-]+)`", FIRST_PART):
        assert (REPO / path).exists(), path
    for link in re.findall(r"\]\(((?:docs|config|deploy)/[^)#]+)", README):
        assert (REPO / link).exists(), link
