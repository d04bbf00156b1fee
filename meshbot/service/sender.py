"""The one sender: every text goes on air through this thread, paced, ACK-checked and retried.

The meshtastic library has no locks on its send path, so exactly one thread may send.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from meshbot.core.config import MeshConfig
from meshbot.core.domain import AckStatus, Clock, Outbound, Radio, RadioEvent, RadioUnavailable, SendResult
from meshbot.core.events import Event, Reason
from meshbot.core.ids import node_id
from meshbot.core.pacing import Pacer
from meshbot.service.ackwait import AckInbox, Stopped
from meshbot.service.holdback import Holdback
from meshbot.storage.store import Store

log = logging.getLogger(__name__)

_STOP_WAIT_S = 1.0  # after stop() cuts its waits, the sender thread ends within this

# Routing errors worth another try: congestion and timing, not a packet that can never fit.
# Not DUTY_CYCLE_LIMIT: the node's hour is full, and every retry would only be refused again.
# Not MAX_RETRANSMIT: the node already sent the packet as many times as the firmware does, under its one id. A copy
# under the same id is dropped by the node (PhoneAPI ignores a client packet id among its last 20), and one under a
# new id shows twice on a handset that had it and whose ACK was lost. The node is out of reach: the rest is held.
RETRYABLE = frozenset({"TIMEOUT", "RATE_LIMIT_EXCEEDED", "NO_RESPONSE", "NO_INTERFACE", "SEND_ERROR", "RADIO_DOWN"})
# A result that may mean the packet went on air: any later copy goes under the same packet id, so a handset that has
# it drops the copy (and ACKs it again) instead of showing it twice.
MAYBE_ON_AIR = frozenset({"TIMEOUT", "RECONNECTED"})
# After a reconnect, how long an ACK wait gives the node to hand over the verdicts it held while the link was
# away (they come right after its config download) before the fragment is sent again.
RECONNECT_GRACE_S = 2.0


@dataclass(frozen=True)
class SendJob:
    """One text for the sender, with a label for the logs."""

    outbound: Outbound
    label: str  # e.g. "q7 2/+": which query and fragment
    query_id: int | None = None
    index: int | None = None  # the fragment's index within its answer
    on_done: Callable[[SendJob, SendResult, int], None] | None = None
    asker: int | None = None  # whose answer this fragment is: its remainder is kept for them when held


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
        holdback: Holdback | None = None,
    ) -> None:
        self._radio = radio
        self.holdback = holdback  # None: a fragment given up does not stop the rest (no store to keep it in)
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
        self._current = AckInbox()  # the inbox of the job being sent: stop() wakes its ACK wait
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
                if self._held(job):
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
        inbox = self._current = AckInbox()
        try:
            result, attempts = self._send_with_retries(job, inbox)
        except Stopped:
            self._left.append(job)  # logged with the rest when the sender ends
            return SendResult(0, AckStatus.FAILED, "SHUTDOWN")
        if self.holdback is not None and _given_up(job, result):
            assert job.query_id is not None and job.index is not None and job.asker is not None
            self.holdback.give_up(job.query_id, job.asker, job.index, job.outbound.text, result, attempts)
        if job.on_done is not None:
            job.on_done(job, result, attempts)
        return result

    def _held(self, job: SendJob) -> bool:
        """A later fragment of an answer whose earlier fragment was given up: kept for "more", not sent."""
        if self.holdback is None or not self.holdback.is_held(job.query_id):
            return False
        assert job.query_id is not None
        self.holdback.divert(job.query_id, job.outbound.text)
        log.debug("held %s: an earlier fragment was not delivered", job.label)
        if job.on_done is not None:
            job.on_done(job, SendResult(0, AckStatus.FAILED, "HELD"), 0)
        return True

    def on_radio_event(self, event: RadioEvent) -> None:
        """The radio's link events (any thread): a reconnect cuts a pending ACK wait short."""
        if event is RadioEvent.CONNECTED:
            self._current.relinked()

    def _send_with_retries(self, job: SendJob, inbox: AckInbox) -> tuple[SendResult, int]:
        attempts = 0
        same_id: int | None = None  # once a copy may be on air, every later one goes under its id
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
            result = self._attempt(job, inbox, same_id)
            if result.reason in MAYBE_ON_AIR and result.packet_id:
                same_id = result.packet_id
            if result.reason == "RECONNECTED":
                result = self._after_reconnect(job, inbox, result)
                if result.reason == "RECONNECTED":
                    attempts -= 1  # the link that lost it is gone: not the text's fault
                    continue
            if result.reason == "RADIO_DOWN" and self._radio_up is not None:
                attempts -= 1  # the link dropped under us: wait for it, it is not the text's fault
                continue
            if result.status in (AckStatus.ACKED, AckStatus.IMPLICIT, AckStatus.SENT):
                break
            if self._stopping.is_set():
                raise Stopped  # no verdict: the next start sends it again
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
        """Sleep on the clock; raise Stopped at once when stop() cuts it."""
        if seconds > 0 and self._clock.wait_for(self._stopping, seconds):
            raise Stopped

    def _wait_for_radio(self, job: SendJob) -> None:
        """Block while the radio is away (the queue waits, nothing is dropped); raise Stopped at shutdown."""
        if self._radio_up is None or self._radio_up.is_set():
            return
        log.info("holding %s until the radio is back", job.label, extra={"event": Event.WAITING_FOR_RADIO})
        while not self._clock.wait_for(self._radio_up, 1.0):
            if self._stopping.is_set() or self._clock.now() > self._drain_until:
                raise Stopped

    def _after_reconnect(self, job: SendJob, inbox: AckInbox, result: SendResult) -> SendResult:
        """The link came back during the ACK wait: take a verdict the node held for us, else send again now."""
        verdict = inbox.wait(self._clock, result.packet_id, RECONNECT_GRACE_S, self._stopping)
        if verdict is not None and verdict.reason != "RECONNECTED":
            return verdict
        log.info(
            "radio reconnected while %s (id %d) waited for its ACK: sending it again under the same id",
            job.label,
            result.packet_id,
            extra={"event": Event.RESENT_AFTER_RECONNECT, "packet_id": result.packet_id},
        )
        return result

    def _attempt(self, job: SendJob, inbox: AckInbox, same_id: int | None = None) -> SendResult:
        self._pause(self._pacer.earliest_send() - self._clock.now())
        out = job.outbound if same_id is None else dataclasses.replace(job.outbound, packet_id=same_id)
        airtime = self._pacer.airtime_of(out.text, reply_id=out.reply_id is not None)
        inbox.new_attempt()
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
        if not out.want_ack:
            return SendResult(packet_id, AckStatus.SENT)
        return self._await_ack(job, packet_id, inbox)

    def _await_ack(self, job: SendJob, packet_id: int, inbox: AckInbox) -> SendResult:
        started = self._clock.now()
        result = inbox.wait(self._clock, packet_id, self._cfg.ack_timeout_s, self._stopping)
        if result is not None and result.reason == "RECONNECTED":
            return result
        self._count_node_retries(job, result, self._clock.now() - started)
        if result is None:
            log.warning(
                "no ACK for %s (id %d) within %.0fs",
                job.label,
                packet_id,
                self._cfg.ack_timeout_s,
                extra={"event": Event.ACK_TIMEOUT, "packet_id": packet_id},
            )
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


def _given_up(job: SendJob, result: SendResult) -> bool:
    """A fragment of an answer that will not be delivered (not one that shutdown merely left for later)."""
    if job.query_id is None or job.index is None or job.asker is None:
        return False
    return result.status not in (AckStatus.ACKED, AckStatus.IMPLICIT, AckStatus.SENT) and result.reason != "SHUTDOWN"


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
