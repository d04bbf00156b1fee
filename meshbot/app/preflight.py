"""What `meshbot config check` and `meshbot run` verify before anything starts: the files the config names.

Cheap checks only: a file or folder exists, the model file has a GGUF header. Nothing is loaded or
connected, so `config check` answers in a moment and `run` fails before it starts the virtual mesh.
"""

from __future__ import annotations

from pathlib import Path

from meshbot.core.config import Config
from meshbot.models.base import ModelError
from meshbot.models.gguf import NotGGUF, read_header


def model_problem(cfg: Config) -> str | None:
    """Why the configured local model cannot load (naming `model.path`), or None; other backends are not checked."""
    if cfg.model.backend != "llama_cpp":
        return None  # a model server: reachable or not is a matter of the moment, not of the config
    from meshbot.models.llama import resolve_model_path

    try:
        path = resolve_model_path(cfg.model)
    except ModelError as exc:
        return str(exc)
    key = "model.path" if cfg.model.path is not None else "the bundled model (model.path unset)"
    try:
        read_header(path)
    except NotGGUF as exc:
        return f"{key} {path}: {exc}"
    except OSError as exc:
        return f"{key} {path}: cannot read: {exc.strerror or exc}"
    return None


def path_problems(cfg: Config) -> list[str]:
    """Folders and files the config names that are not there (each naming its key)."""
    problems = []
    if cfg.knowledge.enabled:
        for raw in cfg.knowledge.paths:
            if not Path(raw).expanduser().exists():
                problems.append(f"knowledge.paths: {raw}: no such folder or file")
    ca_file = cfg.mqtt.ca_file
    if cfg.radio.transport == "mqtt" and cfg.mqtt.tls and ca_file is not None and not ca_file.expanduser().is_file():
        problems.append(f"mqtt.ca_file: {ca_file}: no such file")
    return problems


def problems(cfg: Config) -> list[str]:
    """Everything `config check` reports beyond the config's own validation; empty when all is there."""
    found = path_problems(cfg)
    model = model_problem(cfg)
    return [model, *found] if model else found


def require_model(cfg: Config) -> None:
    """Raise ModelError when the configured local model file is missing or not a GGUF model."""
    problem = model_problem(cfg)
    if problem is not None:
        raise ModelError(problem)
