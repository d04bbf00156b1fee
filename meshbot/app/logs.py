"""Logging set-up, done once by the CLI: one line per event, as text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

# Attributes every LogRecord has; anything else came from `extra=` and is event data.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a call passed with `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record with its event fields."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(event_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record comes, not the one there when the handler was made.

    A caller that swaps stderr for a while (a test's capture, a wrapper) and closes it must not leave later
    records writing into a closed file ("--- Logging error ---" and a traceback on every line).
    """

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        """The current standard error."""
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # StreamHandler.__init__ sets it; the property always answers the current one


def configure(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Install the root handler; call once from the CLI."""
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The meshtastic library logs every frame at DEBUG and some noise at INFO.
    logging.getLogger("meshtastic").setLevel(max(logging.WARNING, root.level))
    # httpx (the openai backend) logs every request at INFO; meshbot logs what an operator needs itself.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
