"""The commands the demo and `meshbot sim` print, spelled so that they work as printed where they are shown.

`make run` installs into .venv without putting .venv/bin on the PATH, so a bare `meshtastic` or
`meshbot` would be "command not found". The scripts beside the running Python are named by the
shortest path that works from the current directory: `.venv/bin/meshtastic` in a checkout,
`meshtastic` when that very script is what the PATH finds.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def script(name: str) -> str:
    """How to run the console script `name` installed beside this Python (the bare name if it is not there)."""
    beside = Path(sys.executable).parent / name
    if not beside.is_file():
        return name  # a Python without it (an unusual install): the name is the best guess
    found = shutil.which(name)
    if found is not None and Path(found).resolve() == beside.resolve():
        return name
    in_checkout = Path(".venv", "bin", name)  # `make run`'s venv, seen from the checkout (maybe via a symlink)
    if in_checkout.is_file() and in_checkout.resolve() == beside.resolve():
        return in_checkout.as_posix()
    try:
        relative = beside.relative_to(Path.cwd())
    except ValueError:
        return str(beside)
    return relative.as_posix() if os.sep in str(relative) else f"./{relative.as_posix()}"


def ask_command(port: int, text: str, dest: str) -> str:
    """`meshbot handset` asking `dest` from the virtual handset on `port`, and showing the answer as it comes."""
    args = ["--host", f"127.0.0.1:{port}", "--to", dest, text]
    return f"{script('meshbot')} handset {shlex.join(args)}"


def nodes_command(port: int) -> str:
    """`meshbot handset` listing the mesh as the virtual handset on `port` sees it."""
    return f"{script('meshbot')} handset --host 127.0.0.1:{port} --nodes"
