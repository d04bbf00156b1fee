"""What the worker does when the model server is away: wait and try again, for a bounded time, then give up.

One outage is shared by every question: the first question that meets a dead server waits up to `retry_for_s`
(with capped, doubling backoff) while the later ones stay queued and stored. Once the outage is older than that,
each question gets a single try and then its apology, so a long outage costs the askers one short message each
and never a hang. The first success ends the outage.
"""

from __future__ import annotations

import logging
import threading

from meshbot.core.config import ModelConfig
from meshbot.core.domain import Clock
from meshbot.core.events import Event
from meshbot.models.base import ModelUnavailable
from meshbot.storage.store import Store

log = logging.getLogger(__name__)

# Kinds in the store's events table, read by `meshbot status`.
MODEL_OK = "model-ok"
MODEL_FAILED = "model-error"


class Outage:
    """The model server's availability as the worker sees it, and the retry policy."""

    def __init__(self, cfg: ModelConfig, clock: Clock, store: Store, stopping: threading.Event) -> None:
        self._cfg = cfg
        self._clock = clock
        self._store = store
        self._stopping = stopping
        self.down_since: float | None = None
        self._attempt = 0
        self._last_error = ""

    def succeeded(self) -> None:
        """A call to the model worked: the outage, if any, is over."""
        if self.down_since is not None:
            log.info(
                "model server back after %.0fs",
                self._clock.now() - self.down_since,
                extra={"event": Event.MODEL_BACK},
            )
        self.down_since, self._attempt, self._last_error = None, 0, ""
        self._store.record_event(MODEL_OK)

    def stalled(self, exc: Exception) -> None:
        """A stream stopped mid-answer: the server answered, so no outage starts, but the operator hears of it."""
        self._store.record_event(MODEL_FAILED)
        log.error("%s", exc, extra={"event": Event.MODEL_ERROR})

    def failed(self, query_id: int, exc: ModelUnavailable) -> bool:
        """Note a failure; wait out the backoff and return True to try again, or False to give up now.

        Returns False at once when `stopping` is set during the wait; the caller checks it.
        """
        now = self._clock.now()
        self._store.record_event(MODEL_FAILED)
        if self.down_since is None:
            self.down_since = now
        if str(exc) != self._last_error:
            # The one line that tells the operator what to fix (the retries below only count).
            self._last_error = str(exc)
            log.error("%s", exc, extra={"event": Event.MODEL_ERROR, "status": exc.status})
        left = self.down_since + self._cfg.retry_for_s - now
        if not exc.retryable or left <= 0:
            return False
        delay = min(self._cfg.retry_backoff_s * 2**self._attempt, self._cfg.retry_max_backoff_s, left)
        self._attempt += 1
        log.warning(
            "model server unavailable for %.0fs: q%d waits %.1fs and tries again (gives up after %.0fs)",
            now - self.down_since,
            query_id,
            delay,
            self._cfg.retry_for_s,
            extra={"event": Event.MODEL_RETRY, "query_id": query_id, "delay_s": round(delay, 2)},
        )
        return not self._clock.wait_for(self._stopping, delay)
