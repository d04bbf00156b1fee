"""One list of log events: every event the daemon logs is named in core/events.py, and JSON logs carry its value."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

from meshbot.app import logs
from meshbot.core.events import Event, Reason

ROOT = Path(__file__).resolve().parents[1] / "meshbot"


def test_no_module_logs_an_event_name_that_is_not_in_the_list() -> None:
    literal = re.compile(r"""["']event["']\s*:\s*f?["']""")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in ROOT.rglob("*.py")
        if "sim" not in path.relative_to(ROOT).parts
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if literal.search(line)
    ]
    assert offenders == [], "log events must be Event members: " + ", ".join(offenders)


def test_event_and_reason_names_are_unique_and_lowercase_words() -> None:
    for enum in (Event, Reason):
        values = [member.value for member in enum]
        assert len(values) == len(set(values))
        assert all(re.fullmatch(r"[a-z][a-z0-9-]*", v) for v in values)


def test_a_json_log_line_carries_the_event_and_reason_as_plain_strings() -> None:
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    try:
        logging.getLogger("meshbot.test").info("x", extra={"event": Event.DROPPED, "reason": Reason.STALE})
    finally:
        logs.configure("WARNING", "text")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert (line["event"], line["reason"]) == ("dropped", "stale")
