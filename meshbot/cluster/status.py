"""The whole service as `meshbot status` shows it on any worker: who is alive, and who holds what."""

from __future__ import annotations

import time
from typing import Any

import redis

from meshbot.cluster.budgets import SharedAirtime
from meshbot.cluster.shared import Shared
from meshbot.cluster.worklog import WorkLog
from meshbot.core.config import ClusterConfig


def cluster_status(cfg: ClusterConfig, region: str) -> dict[str, Any]:
    """Alive workers (fresh heartbeats), questions held per worker (dead ones' too), handed-back ones."""
    shared = Shared(cfg.model_copy(update={"worker_id": "status"}))
    try:
        work = WorkLog(shared, cfg.lease_s)
        alive = shared.workers()
        held = work.pending_by_worker()
        return {
            "redis_url": cfg.redis_url,
            "group": cfg.group,
            "workers": alive,
            "held": held,
            "held_by_silent": sum(n for w, n in held.items() if w not in {a["worker"] for a in alive}),
            "handed_back": work.returned(),
            "region": region,
            "airtime_last_hour_s": SharedAirtime(shared, region).used(0.0),
            "error": None,
        }
    except redis.RedisError as exc:
        return {"redis_url": cfg.redis_url, "group": cfg.group, "workers": [], "held": {}, "error": str(exc)}
    finally:
        shared.close()


def cluster_lines(status: dict[str, Any]) -> list[str]:
    """Human-readable lines for `meshbot status`."""
    if status["error"]:
        return [f"cluster {status['group']}: shared store {status['redis_url']} unreachable: {status['error']}"]
    now = time.time()
    answered = sum(w.get("answered_last_hour", 0) for w in status["workers"])
    lines = [
        f"cluster {status['group']}: {len(status['workers'])} worker(s) alive, {answered} answered in the last hour"
    ]
    for w in status["workers"]:
        lines.append(
            f"  {w['worker']} ({w['host']} pid {w['pid']}): {w['answered_last_hour']} answered, "
            f"{w['queue']} queued, holds {w['holding']}, "
            f"took over {w['taken_over']}{', paused' if w['paused'] else ''}, beat {now - w['at']:.0f}s ago"
        )
    lines.append(
        f"  air time used in {status['region']} (last hour, all workers): {status['airtime_last_hour_s']:.1f}s"
    )
    if status["held_by_silent"]:
        lines.append(f"  {status['held_by_silent']} question(s) held by silent workers: taken over after the lease")
    if status["handed_back"]:
        lines.append(f"  {status['handed_back']} question(s) handed back, waiting for a worker")
    return lines


def cluster_problems(status: dict[str, Any]) -> list[str]:
    """What should fail a health check."""
    if status["error"]:
        return ["shared store unreachable"]
    return [] if status["workers"] else ["no worker alive"]
