"""Which config file a command reads: `--config`, else $MESHBOT_CONFIG, else the first default that exists.

Every subcommand resolves its file here, so `meshbot run`, `ask`, `status`, `sim` and `config check`
agree on it. Tests pass their own `environ` and `defaults` instead of touching /etc.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from meshbot.core.config import Config, load_config
from meshbot.core.events import Event

log = logging.getLogger(__name__)

CONFIG_ENV = "MESHBOT_CONFIG"
# Where systemd and Docker installs keep it (deploy/meshbot.service, Dockerfile).
DEFAULT_CONFIG_PATHS: tuple[Path, ...] = (Path("/etc/meshbot/meshbot.toml"),)
HELP = "TOML config file (default: $MESHBOT_CONFIG, else /etc/meshbot/meshbot.toml if it exists)"
# The commented example with every option, shipped inside the package.
EXAMPLE_PACKAGE, EXAMPLE_NAME = "meshbot.app", "example.toml"


def config_path(
    explicit: Path | None = None,
    environ: Mapping[str, str] | None = None,
    defaults: Sequence[Path] = DEFAULT_CONFIG_PATHS,
) -> Path | None:
    """The file to read, or None for the built-in defaults."""
    if explicit is not None:
        return explicit
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return next((path for path in defaults if path.is_file()), None)


def load(explicit: Path | None = None, overrides: Mapping[str, Any] | None = None) -> tuple[Config, Path | None]:
    """The config every subcommand uses (file, then MESHBOT_* env, then flags), and the file it came from."""
    path = config_path(explicit)
    return load_config(path, overrides), path


def log_source(path: Path | None) -> None:
    """One line saying which file the settings came from (call once logging is set up)."""
    source = str(path) if path is not None else "no file (built-in defaults, MESHBOT_* env, flags)"
    log.info("config: %s", source, extra={"event": Event.CONFIG_READ, "path": str(path) if path else None})


def example_text() -> str:
    """The example config with every option and its default, as shipped in the package."""
    return resources.files(EXAMPLE_PACKAGE).joinpath(EXAMPLE_NAME).read_text(encoding="utf-8")
