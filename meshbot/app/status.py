"""`meshbot status`: what an operator needs, read from the store (works while the daemon runs)."""

from __future__ import annotations

import json
import time
from typing import Any, TextIO

from meshbot.core.config import Config
from meshbot.storage.store import Store

# Unhealthy when the radio has been away this long, or the oldest question waits this long.
RADIO_DOWN_GRACE_S = 120.0


def health(status: dict[str, Any], cfg: Config) -> list[str]:
    """Problems that should fail a health check (empty when healthy)."""
    problems = []
    if status["radio_up_since"] is None:
        problems.append("radio not connected")
    oldest = status["oldest_unfinished_at"]
    if oldest is not None and status["now"] - oldest > cfg.store.max_age_s:
        problems.append(f"a question has waited {status['now'] - oldest:.0f}s")
    return problems


def _ago(now: float, at: float | None) -> str:
    if at is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return f"{stamp} ({(now - at) / 60:.0f} min ago)"


def render(status: dict[str, Any], cfg: Config, out: TextIO) -> None:
    """Human-readable status."""
    now = status["now"]
    hour, day = status["last_hour"], status["last_day"]
    ttff = status["ttff_mean_last_hour_s"]
    budget_s = 3600 * (cfg.mesh.airtime_budget_percent or 0) / 100
    lines = [
        f"radio connected since: {_ago(now, status['radio_up_since'])}",
        f"queue: {status['queue_depth']} waiting, {status['in_progress']} in progress",
        f"last hour: {hour['answered']} answered, {hour['failed']} failed, {hour['dropped']} dropped",
        f"last day:  {day['answered']} answered, {day['failed']} failed, {day['dropped']} dropped",
        f"mean time to first fragment (last hour): {'n/a' if ttff is None else f'{ttff:.2f}s'}",
        f"air time used (last hour): {status['airtime_last_hour_s']:.1f}s"
        + (f" of {budget_s:.0f}s budget" if budget_s else " (budget: half the region's duty cycle)"),
    ]
    out.write("\n".join(lines) + "\n")


def run_status(cfg: Config, out: TextIO, as_json: bool = False) -> int:
    """Print the status; exit 0 when healthy, 1 when not (for HEALTHCHECK and watchdogs)."""
    with Store(cfg.store.path) as store:
        status = store.status()
    problems = health(status, cfg)
    extra: list[str] = []
    if cfg.cluster.enabled:  # several workers: the whole service is in the shared store
        from meshbot.cluster.status import cluster_lines, cluster_problems, cluster_status
        from meshbot.radios.mqtt.transport import region_of

        status["cluster"] = cluster_status(cfg.cluster, region_of(cfg.mqtt.root))
        problems += cluster_problems(status["cluster"])
        extra = cluster_lines(status["cluster"])
    if as_json:
        out.write(json.dumps({**status, "healthy": not problems, "problems": problems}, default=str) + "\n")
    else:
        render(status, cfg, out)
        out.write("".join(line + "\n" for line in extra))
        out.write("healthy\n" if not problems else "UNHEALTHY: " + "; ".join(problems) + "\n")
    return 0 if not problems else 1
