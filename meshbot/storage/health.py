"""The store's read-only health queries (`meshbot status`) and its pruning of old rows.

Plain functions on a connection: `Store` holds the lock or opens the transaction around them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from meshbot.storage.records import OUTCOMES, TERMINAL, UNFINISHED, QueryState, placeholders

HOUR_S = 3600.0
DAY_S = 86400.0
_HEARTBEAT_KEYS = ("pid", "host", "beat_at", "queue_depth", "paused", "stopped")
RADIO_PROBLEM_EVENTS = ("radio-cannot-transmit", "radio-no-region")  # LocalNode.problems codes, as events


def last_heartbeat(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The newest heartbeat row as a dict, or None if no daemon ever ran."""
    row = conn.execute(
        "SELECT pid, host, beat_at, queue_depth, paused, stopped FROM heartbeats ORDER BY beat_at DESC LIMIT 1"
    ).fetchone()
    return None if row is None else dict(zip(_HEARTBEAT_KEYS, row, strict=True))


def status(conn: sqlite3.Connection, now: float) -> dict[str, Any]:
    """Figures for `meshbot status` as of wall-clock `now`."""
    hour, day = now - HOUR_S, now - DAY_S
    marks, unfinished = placeholders(UNFINISHED)
    depth = dict(
        conn.execute(f"SELECT state, COUNT(*) FROM queries WHERE state IN ({marks}) GROUP BY state", unfinished)
    )
    counts = conn.execute(
        "SELECT kind, SUM(at >= ?), COUNT(*) FROM events WHERE kind IN (?, ?, ?) AND at >= ? AND at <= ? GROUP BY kind",
        (hour, *OUTCOMES, day, now),
    ).fetchall()
    ttff, airtime = conn.execute(
        "SELECT AVG(CASE WHEN kind = 'ttff' THEN value END), "
        "TOTAL(CASE WHEN kind = 'airtime' THEN value END) FROM events "
        "WHERE kind IN ('ttff', 'airtime') AND at >= ? AND at <= ?",
        (hour, now),
    ).fetchone()
    radio = conn.execute(
        "SELECT kind, at FROM events WHERE kind IN ('radio-up', 'radio-down') "
        "AND at <= ? ORDER BY at DESC, id DESC LIMIT 1",
        (now,),
    ).fetchone()
    up_since = radio[1] if radio is not None and radio[0] == "radio-up" else None
    # What the node's settings keep it from doing, recorded with the last connect (radio-<code> events).
    problems = (
        []
        if up_since is None
        else [
            kind.removeprefix("radio-")
            for (kind,) in conn.execute(
                "SELECT DISTINCT kind FROM events WHERE kind IN (?, ?) AND at >= ? AND at <= ? ORDER BY kind",
                (*RADIO_PROBLEM_EVENTS, up_since, now),
            )
        ]
    )
    last = conn.execute("SELECT MAX(at) FROM events WHERE at <= ?", (now,)).fetchone()[0]
    oldest = conn.execute(f"SELECT MIN(accepted_at) FROM queries WHERE state IN ({marks})", unfinished).fetchone()[0]
    per_kind = {kind: (int(in_hour), int(in_day)) for kind, in_hour, in_day in counts}
    return {
        "now": now,
        "queue_depth": depth.get(QueryState.QUEUED.value, 0),
        "in_progress": depth.get(QueryState.GENERATING.value, 0) + depth.get(QueryState.SENDING.value, 0),
        "oldest_unfinished_at": oldest,
        "last_hour": {k: per_kind.get(k, (0, 0))[0] for k in OUTCOMES},
        "last_day": {k: per_kind.get(k, (0, 0))[1] for k in OUTCOMES},
        "ttff_mean_last_hour_s": ttff,
        "airtime_last_hour_s": airtime,
        "radio_up_since": up_since,
        "radio_problems": problems,
        "last_event_at": last,
    }


def prune(conn: sqlite3.Connection, cutoff: float) -> int:
    """Delete finished queries, seen packets, texts, remainders and events older than `cutoff`; rows deleted."""
    marks, values = placeholders(TERMINAL)
    old_done = f"SELECT query_id FROM queries WHERE state IN ({marks}) AND updated_at < ?"
    statements: tuple[tuple[str, tuple[Any, ...]], ...] = (
        (f"DELETE FROM fragments WHERE query_id IN ({old_done})", (*values, cutoff)),
        (f"DELETE FROM queries WHERE query_id IN ({old_done})", (*values, cutoff)),
        ("DELETE FROM seen WHERE at < ?", (cutoff,)),
        ("DELETE FROM recent_texts WHERE at < ?", (cutoff,)),
        ("DELETE FROM remainders WHERE at < ?", (cutoff,)),
        # Keep the latest radio-up/down (and its problems) so "connected since" survives a week of quiet uptime.
        (
            "DELETE FROM events WHERE at < ? AND id NOT IN (SELECT MAX(id) FROM events "
            "WHERE kind IN ('radio-up', 'radio-down', ?, ?) GROUP BY kind)",
            (cutoff, *RADIO_PROBLEM_EVENTS),
        ),
    )
    return sum(conn.execute(sql, params).rowcount for sql, params in statements)
