"""The one sender: every text goes on air through this thread, paced, ACK-checked and retried.

The meshtastic library has no locks on its send path, so exactly one thread may send.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from meshbot.core.config import MeshConfig
from meshbot.core.domain import AckStatus, Clock, Outbound, Radio, RadioUnavailable, SendResult
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id
from meshbot.core.metrics import NO_METRICS, Metrics
from meshbot.core.pacing import Pacer
from meshbot.storage.store import Store

log = logging.getLogger(__name__)

_STOP_WAIT_S = 1.0  # after stop() cuts its waits, the sender thread ends within this

# Routing errors worth another try: congestion and timing, not a packet that can never fit.
# Not DUTY_CYCLE_LIMIT: the node's hour is full, and every retry would only be refused again.
RETRYABLE = frozenset(
    {"TIMEOUT", "RATE_LIMIT_EXCEEDED", "MAX_RETRANSMIT", "NO_RESPONSE", "NO_INTERFACE", "SEND_ERROR", "RADIO_DOWN"}
)


@dataclass(frozen=True)
class SendJob:
    """One text for the sender, with a label for the logs."""

    outbound: Outbound
    label: str  # e.g. "q7 2/+": which query and fragment
    query_id: int | None = None
    index: int | None = None  # the fragment's index within its answer
    on_done: Callable[[SendJob, SendResult, int], None] | None = None


class Sender:
    """Takes jobs in order, one at a time: pace, send, wait for the ACK, retry."""

    def __init__(
        self,
        radio: Radio,
        pacer: Pacer,
        clock: Clock,
        cfg: MeshConfig,
        radio_up: threading.Event | None = None,
        store: Store | None = None,
        on_published: Callable[[SendJob, int], None] | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._radio = radio
        self._metrics = metrics
        self._on_published = on_published  # told as soon as a fragment left, before any ACK wait
        self._radio_up = radio_up
        self._store = store
        self._pacer = pacer
        self.pacer = pacer  # read-only use by status and benchmarks
        self._clock = clock
        self._cfg = cfg
        self._jobs: queue.Queue[SendJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._drain_until = float("inf")
        self._current = _Inbox()  # the inbox of the job being sent: stop() wakes its ACK wait
        self._left: list[SendJob] = []  # what stop() left unsent
        self._queued_airtime = 0.0  # air time of texts submitted but not yet sent
        self._airtime_lock = threading.Lock()

    def submit(self, job: SendJob) -> None:
        """Queue a text; it goes out after every text submitted before it."""
        with self._airtime_lock:
            self._queued_airtime += self._airtime(job)
        self._jobs.put(job)

    def backlog(self) -> int:
        """Texts waiting to go (not counting the one in flight)."""
        return self._jobs.qsize()

    def queued_airtime(self) -> float:
        """Seconds of air time already promised to texts waiting in the queue."""
        with self._airtime_lock:
            return self._queued_airtime

    def _airtime(self, job: SendJob) -> float:
        return self._pacer.airtime_of(job.outbound.text, reply_id=job.outbound.reply_id is not None)

    def idle(self) -> bool:
        """True when no text is waiting or in flight."""
        return self._jobs.unfinished_tasks == 0

    def start(self) -> None:
        """Start the sender thread."""
        self._thread = threading.Thread(target=self._run, name="meshbot-sender", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 5.0) -> None:
        """Keep sending what is queued for up to `drain_s`; what is left stays stored for the next start."""
        self._drain_until = self._clock.now() + drain_s
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(drain_s)
        self._stopping.set()  # cuts the pacing gap, ACK wait or retry of a text still in flight
        self._current.wake()
        if self._thread is not None:
            self._thread.join(_STOP_WAIT_S)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    _log_left(self._left)
                    return
                if self._clock.now() > self._drain_until:
                    self._left.append(job)
                    continue
                self.send_now(job)
            except Exception:  # the sender must outlive any one bad job
                log.exception("sender failed on %s", job.label if job else "?")
            finally:
                if job is not None:
                    with self._airtime_lock:
                        self._queued_airtime = max(self._queued_airtime - self._airtime(job), 0.0)
                self._jobs.task_done()

    def send_now(self, job: SendJob) -> SendResult:
        """Send one job with pacing and retries, on the calling thread; returns its last result.

        Cut short by stop(): the job gets no verdict (`on_done` is not called), so a stored fragment
        stays pending and the next start sends it.
        """
        # One inbox for every attempt: a late ACK of attempt 1 still ends the job during attempt 2.
        inbox = self._current = _Inbox()
        try:
            result, attempts = self._send_with_retries(job, inbox)
        except _Stopped:
            self._left.append(job)  # logged with the rest when the sender ends
            return SendResult(0, AckStatus.FAILED, "SHUTDOWN")
        if job.on_done is not None:
            job.on_done(job, result, attempts)
        return result

    def _send_with_retries(self, job: SendJob, inbox: _Inbox) -> tuple[SendResult, int]:
        attempts = 0
        while True:
            attempts += 1
            self._wait_for_radio(job)
            if self._pacer.budget_left(self._clock.now()) < self._airtime(job):
                # The hard stop: never hand the node a text its duty cycle would refuse.
                log.warning(
                    "dropped %s to %s: air-time budget spent (%.0fs left this hour)",
                    job.label,
                    node_id(job.outbound.dest),
                    self._pacer.budget_left(self._clock.now()),
                    extra={"event": Event.DROPPED, "reason": Reason.AIRTIME_BUDGET},
                )
                result = SendResult(0, AckStatus.FAILED, "AIRTIME_BUDGET")
                break
            result = self._attempt(job, inbox)
            if result.reason == "RADIO_DOWN" and self._radio_up is not None:
                attempts -= 1  # the link dropped under us: wait for it, it is not the text's fault
                continue
            if result.status in (AckStatus.ACKED, AckStatus.IMPLICIT, AckStatus.SENT):
                break
            if self._stopping.is_set():
                raise _Stopped  # no verdict: the next start sends it again
            reason = result.reason if result.status is not AckStatus.TIMEOUT else "TIMEOUT"
            if reason not in RETRYABLE or attempts > self._cfg.max_retries:
                log.warning(
                    "dropped %s to %s after %d attempt(s): %s",
                    job.label,
                    node_id(job.outbound.dest),
                    attempts,
                    reason,
                    extra={"event": Event.DROPPED, "reason": reason, "attempts": attempts},
                )
                break
            backoff = self._pacer.min_gap_s * attempts
            log.info(
                "retry %s to %s in %.1fs (attempt %d, last %s)",
                job.label,
                node_id(job.outbound.dest),
                backoff,
                attempts + 1,
                reason,
                extra={"event": Event.RETRY, "reason": reason, "attempt": attempts + 1},
            )
            self._pause(backoff)
        return result, attempts

    def _pause(self, seconds: float) -> None:
        """Sleep on the clock; raise _Stopped at once when stop() cuts it."""
        if seconds > 0 and self._clock.wait_for(self._stopping, seconds):
            raise _Stopped

    def _wait_for_radio(self, job: SendJob) -> None:
        """Block while the radio is away (the queue waits, nothing is dropped); raise _Stopped at shutdown."""
        if self._radio_up is None or self._radio_up.is_set():
            return
        log.info("holding %s until the radio is back", job.label, extra={"event": Event.WAITING_FOR_RADIO})
        while not self._clock.wait_for(self._radio_up, 1.0):
            if self._stopping.is_set() or self._clock.now() > self._drain_until:
                raise _Stopped

    def _attempt(self, job: SendJob, inbox: _Inbox) -> SendResult:
        self._pause(self._pacer.earliest_send() - self._clock.now())
        out = job.outbound
        airtime = self._pacer.airtime_of(out.text, reply_id=out.reply_id is not None)
        try:
            packet_id = self._radio.send(out, inbox.put)
        except RadioUnavailable as exc:
            log.warning("radio down while sending %s: %s", job.label, exc, extra={"event": Event.SEND_ERROR})
            if self._radio_up is not None:
                self._radio_up.clear()
            return SendResult(0, AckStatus.FAILED, "RADIO_DOWN")
        except Exception as exc:  # a library refusal: report, let the caller retry
            log.error("send of %s failed: %s", job.label, exc, extra={"event": Event.SEND_ERROR})
            return SendResult(0, AckStatus.FAILED, "SEND_ERROR")
        if self._on_published is not None and job.query_id is not None and job.index is not None:
            try:
                self._on_published(job, packet_id)
            except Exception as exc:  # bookkeeping must not make a sent text look unsent
                log.error("recording %s as sent failed: %s", job.label, exc, extra={"event": Event.SEND_ERROR})
        # Stamp after the write: the gap that matters is the one the node sees.
        self._pacer.on_sent(self._clock.now(), airtime)
        if self._store is not None:
            self._store.record_event("airtime", airtime)
        nbytes = len(out.text.encode("utf-8"))
        log.info(
            "sent %s to %s ch%d: %d B, %.2fs on air, id %d",
            job.label,
            node_id(out.dest),
            out.channel,
            nbytes,
            airtime,
            packet_id,
            extra={
                "event": Event.FRAGMENT_SENT,
                "dest": node_id(out.dest),
                "bytes": nbytes,
                "airtime_s": round(airtime, 3),
                "packet_id": packet_id,
            },
        )
        self._metrics.on_air(airtime, fragment=job.query_id is not None)
        if not out.want_ack:
            return SendResult(packet_id, AckStatus.SENT)
        return self._await_ack(job, packet_id, inbox)

    def _await_ack(self, job: SendJob, packet_id: int, inbox: _Inbox) -> SendResult:
        started = self._clock.now()
        result = inbox.wait(self._clock, packet_id, self._cfg.ack_timeout_s, self._stopping)
        self._count_node_retries(job, result, self._clock.now() - started)
        if result is None:
            log.warning(
                "no ACK for %s (id %d) within %.0fs",
                job.label,
                packet_id,
                self._cfg.ack_timeout_s,
                extra={"event": Event.ACK_TIMEOUT, "packet_id": packet_id},
            )
            self._metrics.nak("TIMEOUT")
            return SendResult(packet_id, AckStatus.TIMEOUT, "TIMEOUT")
        waited = self._clock.now() - started
        if result.status is AckStatus.NAKED:
            if result.reason == "DUTY_CYCLE_LIMIT":
                self._pacer.on_duty_nak(self._clock.now())
            log.warning(
                "NAK for %s (id %d): %s",
                job.label,
                packet_id,
                result.reason,
                extra={"event": Event.FRAGMENT_NAK, "reason": result.reason, "packet_id": packet_id},
            )
            self._metrics.nak(result.reason)
        else:
            log.info(
                "%s %s (id %d) after %.1fs",
                "acked" if result.status is AckStatus.ACKED else "implicit ack for",
                job.label,
                result.packet_id,
                waited,
                extra={
                    "event": Event.FRAGMENT_ACKED,
                    "status": result.status.value,
                    "packet_id": result.packet_id,
                    "ack_s": round(waited, 3),
                },
            )
            self._metrics.ack()
        return result

    def _count_node_retries(self, job: SendJob, result: SendResult | None, waited: float) -> None:
        # The node's own retransmissions are air time too; the firmware's duty cycle counts them.
        if result is not None and result.status is AckStatus.NAKED and result.reason != "MAX_RETRANSMIT":
            return  # refused outright (rate, size, duty): nothing went on air again
        delivered = result is not None and result.status is not AckStatus.NAKED
        retries = self._pacer.on_node_retries(self._clock.now(), job.outbound.text, waited if delivered else None)
        if retries:
            log.info(
                "node sent %s %d more time(s) before %s",
                job.label,
                retries,
                "its ACK" if delivered else "giving up",
                extra={"event": Event.NODE_RETRIES, "retries": retries},
            )


class _Stopped(Exception):
    """stop() cut a send short: the job is left for the next start."""


def _log_left(left: list[SendJob]) -> None:
    """One line for what shutdown left: stored fragments wait for the next start; notices are gone."""
    kept = [job for job in left if job.query_id is not None]
    gone = [job for job in left if job.query_id is None]
    if kept:
        log.warning(
            "left %d fragment(s) unsent at shutdown (%s): they stay stored and are sent at the next start",
            len(kept),
            ", ".join(job.label for job in kept),
            extra={
                "event": Event.ABANDONED,
                "reason": Reason.SHUTDOWN,
                "query_ids": sorted({job.query_id for job in kept if job.query_id is not None}),
            },
        )
    if gone:
        log.warning(
            "dropped %d notice(s) at shutdown (%s)",
            len(gone),
            ", ".join(f"{job.label} to {node_id(job.outbound.dest)}" for job in gone),
            extra={"event": Event.DROPPED, "reason": Reason.SHUTDOWN},
        )


class _Inbox:
    """ACKs and NAKs for every attempt of one job, filled from the radio's thread."""

    def __init__(self) -> None:
        self._results: list[SendResult] = []
        self._lock = threading.Lock()
        self._changed = threading.Event()

    def put(self, result: SendResult) -> None:
        """Called by the radio with an ACK or NAK."""
        with self._lock:
            self._results.append(result)
        self._changed.set()

    def _verdict(self, packet_id: int) -> SendResult | None:
        with self._lock:
            self._changed.clear()  # under the lock, before reading: no wake-up can be lost
            acks = [r for r in self._results if r.status in (AckStatus.ACKED, AckStatus.IMPLICIT)]
            if acks:
                return acks[0]  # any attempt delivered: done
            naks = [r for r in self._results if r.packet_id in (packet_id, 0)]
            return naks[-1] if naks else None

    def wake(self) -> None:
        """Make a waiting `wait` look at its stop flag now."""
        self._changed.set()

    def wait(self, clock: Clock, packet_id: int, timeout: float, stopping: threading.Event) -> SendResult | None:
        """The verdict for the current attempt, or None on timeout; raises _Stopped once `stopping` is set."""
        deadline = clock.now() + timeout
        while True:
            verdict = self._verdict(packet_id)
            left = deadline - clock.now()
            if verdict is not None or left <= 0:
                return verdict
            if stopping.is_set():
                raise _Stopped
            clock.wait_for(self._changed, left)
