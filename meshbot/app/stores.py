"""Where a daemon keeps its state: the configured store, or the demo's beside it (read by `run` and `status`)."""

from __future__ import annotations

from pathlib import Path


def demo_store_path(path: str) -> str:
    """Where the demo's daemon keeps its state: beside the configured store, "-demo" added to the name."""
    if path == ":memory:":
        return path
    store = Path(path)
    return str(store.with_name(f"{store.stem}-demo{store.suffix}"))
