"""`meshbot status`: what an operator or a watchdog needs, read from the store without writing to it.

Running or not comes from the daemon's heartbeat row (written every HEARTBEAT_EVERY_S): no row, a
clean-stop mark, or a beat older than STALE_AFTER_S (the daemon was killed) all mean "not running",
which is unhealthy. A store file that does not exist is an error, never a new empty file.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from meshbot.core.config import Config
from meshbot.radios.advice import advice
from meshbot.service.daemon import HEARTBEAT_EVERY_S
from meshbot.storage.store import Store, StoreError, StoreMissing

# A daemon that has missed this many heartbeats is gone (kill -9, power cut, hung).
STALE_AFTER_S = 3 * HEARTBEAT_EVERY_S


def liveness(beat: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """Running or not from the newest heartbeat row; `pid` only while running."""
    if beat is None:
        why: str | None = "no daemon has run with this store"
    elif beat["stopped"]:
        why = "it stopped cleanly"
    elif now - beat["beat_at"] > STALE_AFTER_S:
        why = f"its heartbeat stopped (pid {beat['pid']} killed or hung?)"
    else:
        why = None
    return {
        "running": why is None,
        "pid": beat["pid"] if beat is not None and why is None else None,
        "host": beat["host"] if beat is not None else None,
        "last_heartbeat_at": beat["beat_at"] if beat is not None else None,
        "paused": bool(beat["paused"]) if beat is not None and why is None else False,
        "not_running_because": why,
    }


def health(status: dict[str, Any], cfg: Config) -> list[str]:
    """Problems that should fail a health check (empty when healthy)."""
    if not status["running"]:
        return ["not running"]
    problems = []
    if status["radio_up_since"] is None:
        problems.append("radio not connected")
    problems += [f"radio {code.replace('-', ' ')}" for code in status.get("radio_problems", ())]
    oldest = status["oldest_unfinished_at"]
    if oldest is not None and status["now"] - oldest > cfg.store.max_age_s:
        problems.append(f"a question has waited {status['now'] - oldest:.0f}s")
    return problems


def _ago(now: float, at: float | None) -> str:
    if at is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    age = now - at
    return f"{stamp} ({age:.0f} s ago)" if age < 120 else f"{stamp} ({age / 60:.0f} min ago)"


def _running_line(status: dict[str, Any]) -> str:
    now = status["now"]
    if status["running"]:
        beat = _ago(now, status["last_heartbeat_at"])
        paused = ", paused by an admin" if status["paused"] else ""
        return f"running: pid {status['pid']} on {status['host']}, last heartbeat {beat}{paused}"
    last = status["last_heartbeat_at"]
    ran = f"; last ran {_ago(now, last)}" if last is not None else ""
    return f"NOT RUNNING: {status['not_running_because']}{ran}"


def render(status: dict[str, Any], cfg: Config, out: TextIO) -> None:
    """Human-readable status."""
    now = status["now"]
    hour, day = status["last_hour"], status["last_day"]
    ttff = status["ttff_mean_last_hour_s"]
    budget_s = 3600 * (cfg.mesh.airtime_budget_percent or 0) / 100
    lines = [_running_line(status)]
    if status["running"]:  # a stopped daemon's last radio event says nothing about now
        lines.append(f"radio connected since: {_ago(now, status['radio_up_since'])}")
        lines += [f"radio WARNING: {advice(code)}" for code in status.get("radio_problems", ())]
    lines += [
        f"queue: {status['queue_depth']} waiting, {status['in_progress']} in progress",
        f"last hour: {hour['answered']} answered, {hour['failed']} failed, {hour['dropped']} dropped",
        f"last day:  {day['answered']} answered, {day['failed']} failed, {day['dropped']} dropped",
        f"mean time to first fragment (last hour): {'n/a' if ttff is None else f'{ttff:.2f}s'}",
        f"air time used (last hour): {status['airtime_last_hour_s']:.1f}s"
        + (f" of {budget_s:.0f}s budget" if budget_s else " (budget: half the region's duty cycle)"),
    ]
    out.write("\n".join(lines) + "\n")


def model_status(cfg: Config, store: Store) -> dict[str, Any]:
    """The backend, its server, and whether the last call to it worked (events the worker records)."""
    last = store.last_event("model-ok", "model-error")
    return {
        "backend": cfg.model.backend,
        "server": cfg.model.base_url if cfg.model.backend == "openai" else None,
        "last_call_ok": None if last is None else last[0] == "model-ok",
        "last_call_at": None if last is None else last[1],
    }


def _model_line(model: dict[str, Any], now: float) -> str:
    where = f" at {model['server']}" if model["server"] else ""
    if model["last_call_ok"] is None:
        return f"model: {model['backend']}{where}, no call recorded yet\n"
    verdict = "succeeded" if model["last_call_ok"] else "FAILED"
    return f"model: {model['backend']}{where}, last call {verdict} {_ago(now, model['last_call_at'])}\n"


def read_status(cfg: Config) -> dict[str, Any]:
    """The store's figures and the daemon's liveness; raises StoreError (missing file, unreadable, other schema)."""
    if cfg.store.path == ":memory:":
        raise StoreError("store.path is ':memory:': a daemon keeps nothing there to read")
    with Store.open_read_only(cfg.store.path) as store:
        status = store.status()
        return {**status, **liveness(store.last_heartbeat(), status["now"]), "model": model_status(cfg, store)}


def run_status(cfg: Config, out: TextIO, err: TextIO | None = None, as_json: bool = False) -> int:
    """Print the status; exit 0 when running and healthy, 1 when not (for HEALTHCHECK and watchdogs)."""
    try:
        status = read_status(cfg)
    except StoreMissing as exc:
        hint = "store.path; a relative path is from the working directory: give --config the daemon's config"
        (err or sys.stderr).write(f"meshbot status: {exc} ({hint})\n")
        return 1
    except StoreError as exc:
        (err or sys.stderr).write(f"meshbot status: {exc}\n")
        return 1
    problems = health(status, cfg)
    extra: list[str] = []
    if cfg.cluster.enabled:  # several workers: the whole service is in the shared store
        from meshbot.cluster.status import cluster_lines, cluster_problems, cluster_status
        from meshbot.radios.mqtt.transport import region_of

        status["cluster"] = cluster_status(cfg.cluster, region_of(cfg.mqtt.root))
        problems += cluster_problems(status["cluster"])
        extra = cluster_lines(status["cluster"])
    if as_json:
        out.write(json.dumps({**status, "healthy": not problems, "problems": problems}, default=str))
        out.write("\n")
    else:
        render(status, cfg, out)
        out.write(_model_line(status["model"], status["now"]))
        out.write("".join(line + "\n" for line in extra))
        out.write("healthy\n" if not problems else "UNHEALTHY: " + "; ".join(problems) + "\n")
    return 0 if not problems else 1
