"""`meshbot`: the command line. The composition root: the one place that wires real parts together."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshbot import __version__
from meshbot.app import configfile, interrupts, logs
from meshbot.core.config import Config, ConfigError
from meshbot.core.registry import UnknownName
from meshbot.models.base import ModelError

log = logging.getLogger(__name__)

CONFIG_HELP = configfile.HELP
# Errors whose message already says what to fix: one line on stderr and exit code 2, never a traceback.
KNOWN_ERRORS = (UnknownName, ModelError)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help=CONFIG_HELP)
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    p.add_argument("--log-format", choices=["text", "json"], help="text lines or one JSON object per line")
    p.add_argument("--model", type=Path, dest="model_path", help="GGUF model file (default: bundled)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="meshbot", description="Offline AI relay bot for Meshtastic meshes.")
    parser.add_argument("--version", action="version", version=f"meshbot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (virtual mesh demo when no radio is attached)")
    _add_common(run)
    where = run.add_mutually_exclusive_group()
    where.add_argument("--port", help="serial device, e.g. /dev/ttyUSB0")
    where.add_argument("--host", help="node's TCP API, HOST[:PORT] (default port 4403)")
    where.add_argument("--ble", help="BLE address or name")
    run.add_argument("--sim", action="store_true", help="run the virtual mesh demo even if a radio is found")

    ask = sub.add_parser("ask", help="ask the local model; print the fragments that would go on air")
    _add_common(ask)
    ask.add_argument("--backend", help='model backend: "llama_cpp" (local GGUF) or "openai" (a model server)')
    ask.add_argument(
        "--base-url", dest="base_url", help="openai backend: the server's API root, e.g. http://HOST:8080/v1"
    )
    ask.add_argument("--api-model", dest="api_model", help="openai backend: model name (default: the first listed)")
    ask.add_argument("question", help="the question, as a handset user would type it")

    from meshbot.sim.app.cli import register as register_sim

    register_sim(sub)

    from meshbot.app.evaluation import register as register_eval

    register_eval(sub)

    from meshbot.app.handset import register as register_handset

    register_handset(sub)

    from meshbot.app.keys import register as register_keys

    register_keys(sub)

    # Parsed by the server itself (see main): listed here for `meshbot --help`.
    sub.add_parser(
        "serve-model",
        add_help=False,
        help="run llama-cpp-python's OpenAI-compatible model server for the openai backend (its own flags follow)",
    )

    status = sub.add_parser("status", help="health of a running (or stopped) daemon, from its store")
    status.add_argument("--config", type=Path, help=CONFIG_HELP)
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument(
        "--store",
        metavar="PATH",
        help="the state database to read (default: store.path, or the demo's meshbot-demo.db while a demo runs)",
    )

    cfg = sub.add_parser("config", help="config tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate a config file and print the result")
    check.add_argument("file", nargs="?", type=Path, help=CONFIG_HELP.replace("TOML config file", "config file"))
    cfg_sub.add_parser("example", help="print the example config (every option, its default, what it does)")
    return parser


def _config_path(args: argparse.Namespace) -> Path | None:
    return configfile.config_path(getattr(args, "config", None) or getattr(args, "file", None))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {
        "radio.port": "port",
        "radio.host": "host",
        "radio.ble": "ble",
        "log.level": "log_level",
        "log.format": "log_format",
        "model.path": "model_path",
        "model.backend": "backend",
        "model.base_url": "base_url",
        "model.api_model": "api_model",
    }
    return {key: getattr(args, attr, None) for key, attr in pairs.items()}


def load(args: argparse.Namespace) -> Config:
    """Load the config the way every subcommand does: file, then env, then flags."""
    return configfile.load(_config_path(args), _overrides(args))[0]


def cmd_config(args: argparse.Namespace) -> int:
    """`meshbot config check|example`."""
    if args.config_command == "example":
        sys.stdout.write(configfile.example_text())
        return 0
    return cmd_config_check(args)


def cmd_config_check(args: argparse.Namespace) -> int:
    """`meshbot config check`: validate and print the effective config."""
    from meshbot.app.compose import check_names
    from meshbot.app.preflight import problems

    cfg = load(args)
    check_names(cfg)
    source = _config_path(args) or "(no file: built-in defaults)"
    found = problems(cfg)
    if found:
        sys.stderr.write("".join(f"meshbot: config check: {source}: {problem}\n" for problem in found))
        return 2
    sys.stdout.write(f"config OK: {source}\n")
    sys.stdout.write(cfg.model_dump_json(indent=2) + "\n")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    """`meshbot ask`: the real model, no radio."""
    from meshbot.app.ask import run_ask

    cfg = load(args)
    logs.configure(cfg.log.level if args.log_level else "WARNING", cfg.log.format)
    configfile.log_source(_config_path(args))
    return run_ask(cfg, args.question, sys.stdout)


def cmd_run(args: argparse.Namespace) -> int:
    """`meshbot run`: the daemon, until SIGINT or SIGTERM (a second one exits at once)."""
    stop = threading.Event()
    interrupts.install(stop)  # first: a Ctrl-C while the model or the radio loads is a stop too
    from meshbot.app.runner import run_daemon

    cfg = load(args)
    logs.configure(cfg.log.level, cfg.log.format)
    configfile.log_source(_config_path(args))
    return run_daemon(cfg, stop, force_sim=args.sim)


def cmd_status(args: argparse.Namespace) -> int:
    """`meshbot status`: exit 0 when healthy, 1 when not."""
    from meshbot.app.status import run_status

    return run_status(load(args), sys.stdout, sys.stderr, as_json=args.json, store=args.store)


COMMANDS = {"run": cmd_run, "ask": cmd_ask, "config": cmd_config, "status": cmd_status}


def cmd_serve_model(argv: Sequence[str]) -> int:
    """`meshbot serve-model ...`: llama_cpp.server with the llama backend's load settings."""
    from meshbot.models.base import ModelError
    from meshbot.models.llama_server import serve

    logs.configure("INFO", "text")
    try:
        return serve(argv)
    except ModelError as exc:
        sys.stderr.write(f"meshbot: {exc}\n")
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `meshbot` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve-model"]:  # every flag after it is the server's, --help included
        return cmd_serve_model(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        handler = getattr(args, "func", None) or COMMANDS[args.command]
        code = handler(args)
        sys.stdout.flush()  # inside the try: a reader that went away (`| head`) is a broken pipe here
        return code
    except ConfigError as exc:
        sys.stderr.write(f"meshbot: config error: {exc}\n")
        return 2
    except KNOWN_ERRORS as exc:
        sys.stderr.write(f"meshbot: {exc}\n")
        return 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:  # Ctrl-C in a command without its own handler (ask, status, config)
        sys.stderr.write("meshbot: interrupted\n")
        return 130


def _quiet_broken_pipe() -> int:
    """The reader of our stdout left (`meshbot status | head -5`): exit as a Unix tool does, without a word."""
    # Python flushes stdout again at exit; pointing it at /dev/null keeps that flush from a second error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
