"""`meshbot eval`: score a model and a configuration on a question set, offline.

    meshbot eval                                   # the shipped set, the configured model and notes
    meshbot eval --questions mine.jsonl --json out.json
    meshbot eval --compare knowledge=off knowledge=example
    meshbot eval --compare a.toml b.toml           # e.g. two GGUFs
    meshbot eval --compare mode=open mode=grounded  # [answers] mode

A configuration for --compare is a TOML file, or overrides on top of --config: `section.key=value`
pairs joined by ";" (values as JSON where they parse, e.g. `knowledge.paths=["/srv/notes"]`), or the
shorthands `knowledge=off`, `knowledge=example` (the bundled example notes), `reference=off`,
`mode=open` and `mode=grounded`; e.g. `mode=open;knowledge=example`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from meshbot.core.airtime import PRESETS, preset
from meshbot.core.config import Config, ConfigError, load_config

SHORTHANDS: dict[str, dict[str, Any]] = {
    "knowledge=off": {"knowledge.enabled": False},
    "knowledge=example": {"knowledge.enabled": True, "knowledge.paths": "EXAMPLE"},
    "reference=off": {"answers.reference": False},
    "mode=open": {"answers.mode": "open"},
    "mode=grounded": {"answers.mode": "grounded"},
    "mode=auto": {"answers.mode": "auto"},
}


# Air time is counted on the firmware's default modem preset unless --preset names another.
EVAL_PRESET = "LONG_FAST"


def register(sub: Any) -> None:
    """Add the `eval` subcommand to the CLI."""
    from meshbot.app.cli import _add_common

    p = sub.add_parser(
        "eval", help="score the model on a question set: right, dangerous, invented, per path, per air-minute"
    )
    _add_common(p)
    p.add_argument(
        "--questions", type=Path, action="append", help="a JSONL question file (repeatable); default: the shipped set"
    )
    p.add_argument("--no-shipped", action="store_true", help="with --questions: leave the shipped set out")
    p.add_argument("--category", action="append", help="only these categories (repeatable)")
    p.add_argument("--limit", type=int, help="at most this many questions per category")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two configurations side by side")
    p.add_argument("--preset", default=EVAL_PRESET, choices=sorted(PRESETS), help="modem preset for air time")
    p.add_argument("--json", type=Path, dest="json_path", help="write every answer and figure here")
    p.add_argument("--seed", type=int, default=42, help="sampling seed for every question (default 42)")
    p.set_defaults(func=cmd_eval)


def _override_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_spec(spec: str) -> dict[str, Any]:
    """A --compare configuration written as overrides: {"section.key": value}."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        if part in SHORTHANDS:
            out.update(SHORTHANDS[part])
            continue
        key, sep, value = part.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--compare {spec!r}: expected a TOML file or section.key=value pairs")
        out[key.strip()] = _override_value(value.strip())
    return out


def resolve(spec: str | None, base_path: Path | None, base_flags: dict[str, Any]) -> tuple[str, Config]:
    """A label and a Config for one configuration of the run."""
    if spec is not None and Path(spec).is_file():
        return Path(spec).stem, load_config(Path(spec), base_flags)
    overrides = dict(base_flags)
    if spec is not None:
        overrides.update(parse_spec(spec))
    if overrides.get("knowledge.paths") == "EXAMPLE":
        from meshbot.knowledge_example import FOLDER

        overrides["knowledge.paths"] = [str(FOLDER)]
    return spec or "configured", load_config(base_path, overrides)


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, a line per step otherwise)."""

    WIDTH = 30

    def __init__(self, total: int, label: str, out: TextIO) -> None:
        self.total, self.label, self.out = max(total, 1), label, out
        self.tty = out.isatty()

    def __call__(self, done: int, question: Any) -> None:
        filled = self.WIDTH * done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        what = "done" if done >= self.total else getattr(question, "id", "")
        line = f"{self.label} [{bar}] {done}/{self.total} {what}"
        if self.tty:
            self.out.write("\r\x1b[K" + line + ("\n" if done >= self.total else ""))
        elif done % 10 == 0 or done >= self.total:
            self.out.write(line + "\n")
        self.out.flush()


def cmd_eval(args: argparse.Namespace) -> int:
    """`meshbot eval`: run, print the table, write JSON if asked."""
    from meshbot.app import logs
    from meshbot.app.cli import _config_path, _overrides
    from meshbot.app.evaluation.questions import QuestionError, load_questions, shipped_files
    from meshbot.app.evaluation.session import evaluate

    logs.configure(args.log_level or "WARNING", "text")
    try:
        files = ([] if args.no_shipped and args.questions else shipped_files()) + list(args.questions or [])
        questions = [q for f in files for q in load_questions(f)]
    except (OSError, QuestionError) as exc:
        sys.stderr.write(f"meshbot eval: {exc}\n")
        return 2
    flags = _overrides(args)
    specs = args.compare or [None]
    configs = [resolve(spec, _config_path(args), flags) for spec in specs]
    return evaluate(configs, questions, args, preset(args.preset), sys.stdout, sys.stderr)
