"""The one model worker: turns a query into fragments on air while the model is still writing."""

from __future__ import annotations

import logging
import threading

from meshbot.core import limits
from meshbot.core.config import Config
from meshbot.core.domain import Clock, GenerationStats, Model, Outbound
from meshbot.core.events import Event, Reason
from meshbot.core.fragmenter import Fragment, fragment, labelled
from meshbot.core.ids import node_id
from meshbot.core.metrics import NO_METRICS, Metrics
from meshbot.core.pacing import Pacer
from meshbot.core.policy import Kind
from meshbot.core.power import Mode
from meshbot.core.trust import remainder_slot
from meshbot.models.base import ModelStalled, ModelUnavailable
from meshbot.service import answering
from meshbot.service.answering import Abandoned, Answerer, AnswerStream, Asked, log_path
from meshbot.service.context import Contexts
from meshbot.service.ledger import Ledger
from meshbot.service.observed import seen
from meshbot.service.outage import Outage
from meshbot.service.power import PowerMonitor
from meshbot.service.queueing import Query
from meshbot.service.sender import Sender, SendJob

log = logging.getLogger(__name__)

NOTHING_MORE = "Nothing more to send."
NO_ANSWER = "Sorry, I have no answer to that."
MODEL_APOLOGY = "Sorry, my AI server is not reachable right now. Please ask again later."
# Ends an answer whose stream stopped after fragments went on air. One word, so the fragmenter never splits it
# across two fragments (the space before it is always a better cut).
CUT_MARKER = " [cut-off]"
# A remainder kept for "more" expires: an old half-answer is worse than none.
REMAINDER_TTL_S = 3600.0


def fragment_budget(cfg: Config, query: Query) -> int:
    """Bytes one fragment of the answer to `query` may use (the rule is answering.fragment_budget's)."""
    return answering.fragment_budget(cfg, dm=query.decision.reply_to != limits.BROADCAST_NUM)


class Worker:
    """Runs one query at a time through the model and hands fragments to the sender."""

    def __init__(
        self,
        cfg: Config,
        model: Model,
        sender: Sender,
        pacer: Pacer,
        clock: Clock,
        ledger: Ledger,
        contexts: Contexts | None = None,
        power: PowerMonitor | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._cfg = cfg
        self._power = power
        self._metrics = metrics
        self._contexts = contexts or Contexts()
        self._model = model
        self._answerer = Answerer(cfg, model)
        self._sender = sender
        self._pacer = pacer
        self._clock = clock
        self._ledger = ledger
        self._store = ledger.store
        self.abandon = threading.Event()  # set at shutdown: stop generating mid-reply
        self.stopping = threading.Event()  # set at shutdown: stop waiting for a model server that is away
        self._outage = Outage(cfg.model, clock, self._store, self.stopping)

    def handle(self, query: Query) -> None:
        """Answer one query: a fresh question or a "more"."""
        self._ledger.generating(query)
        if query.decision.kind is Kind.MORE:
            self._more(query)
        else:
            self._ask(query)

    def _fragments_allowed(self, query: Query, budget: int) -> int:
        wanted = self._cfg.mesh.max_fragments
        full = self._pacer.airtime_of("x" * budget, reply_id=True)
        # What is left of the hour, less what texts already waiting for the sender will use.
        allowed = self._pacer.affordable_fragments(
            self._clock.now(), wanted, full, promised_s=self._sender.queued_airtime()
        )
        if allowed < wanted:
            log.warning(
                "air-time budget tight (%.0fs left this hour): q%d limited to %d fragment(s)",
                self._pacer.budget_left(self._clock.now()),
                query.query_id,
                allowed,
                extra={"event": Event.SHORTENED, "fragments": allowed},
            )
        return allowed

    def _economy(self, query: Query) -> bool:
        """Power mode economy (or lower) for a question that is not an emergency: one fragment, fewer tokens."""
        return self._power is not None and self._power.mode() is not Mode.NORMAL and not query.emergency

    def _ask(self, query: Query) -> None:
        budget = fragment_budget(self._cfg, query)
        allowed = self._fragments_allowed(query, budget)
        if self._economy(query):
            allowed = min(allowed, 1)
        if allowed == 0:
            log.warning(
                "dropped q%d from %s: air-time budget spent",
                query.query_id,
                node_id(query.node),
                extra={"event": Event.DROPPED, "reason": Reason.AIRTIME_BUDGET},
            )
            self._metrics.question(seen(query, "dropped", self._clock.now(), reason=Reason.AIRTIME_BUDGET))
            self._ledger.dropped(query.query_id, Reason.AIRTIME_BUDGET)
            return
        question = query.decision.question
        context = self._contexts.gather(query)
        cap = self._cfg.power.economy_max_tokens if self._economy(query) else None
        asked = Asked(
            question,
            context.history,
            context.asker,
            context.notes,
            query.seed,
            query.conversation_name,
            mesh=context.mesh,
            max_tokens=cap,
            follow_up=context.follow_up,
        )
        started = self._clock.now()
        mark = self._power.energy.begin() if self._power is not None else None
        answered = self._generate(query, asked, budget, allowed, started)
        energy = self._power.energy.end(mark) if self._power is not None and mark is not None else None
        if answered is None:
            return
        answer, sent = answered
        if not sent:
            log.warning("model gave q%d an empty answer", query.query_id, extra={"event": Event.EMPTY_ANSWER})
            self._submit_one(query, 1, labelled(NO_ANSWER, self._cfg.mesh.ai_tag, budget), "empty")
        if answer.capped:
            self._keep_remainder(query, answer.remainder, answer.next_index)
        log_path(answer, f"q{query.query_id}")
        self._store.record_event(f"answer-{answer.path}")
        self._ledger.generated(query)
        self._contexts.answered(query, question, answer.text)
        self._log_answered(query, answer.stats, sent, started, answer.capped, energy)

    def _generate(
        self, query: Query, asked: Asked, budget: int, allowed: int, started: float
    ) -> tuple[AnswerStream, list[Fragment]] | None:
        """Stream one answer on air, trying again while the model server is away; None: nothing more to do."""
        while True:
            answer = self._answerer.stream(asked, budget, allowed, self.abandon.is_set)
            sent: list[Fragment] = []
            try:
                for frag in answer:
                    self._submit(query, [frag], sent, started)
            except Abandoned:
                self._log_abandoned(query, sent)
                return None
            except (ModelUnavailable, ModelStalled) as exc:
                if sent:  # on air already: end it visibly, never re-send or splice another generation
                    self._cut_off(query, answer, sent, started, exc)
                    return answer, sent
                # Nothing went on air: a stall before fragment 1 is one more failed try.
                failure = exc if isinstance(exc, ModelUnavailable) else ModelUnavailable(str(exc))
                if self._outage.failed(query.query_id, failure):
                    continue
                if self.stopping.is_set():
                    self._log_abandoned(query, sent)
                else:
                    self._give_up(query)
                return None
            self._outage.succeeded()
            return answer, sent

    def _log_abandoned(self, query: Query, sent: list[Fragment]) -> None:
        log.warning(
            "abandoned q%d mid-reply: shutting down (%d fragment(s) handed over); "
            "it stays stored and resumes at the next start",
            query.query_id,
            len(sent),
            extra={"event": Event.ABANDONED, "reason": Reason.SHUTDOWN, "query_id": query.query_id},
        )

    def _cut_off(
        self, query: Query, answer: AnswerStream, sent: list[Fragment], started: float, exc: Exception
    ) -> None:
        self._outage.stalled(exc)
        log.warning(
            "q%d cut off after %d fragment(s): %s",
            query.query_id,
            len(sent),
            exc,
            extra={"event": Event.CUT_OFF, "query_id": query.query_id, "fragments": len(sent)},
        )
        for frag in answer.cut_off(CUT_MARKER):
            self._submit(query, [frag], sent, started)

    def _give_up(self, query: Query) -> None:
        """One short apology to the asker; the question is recorded failed (it is not queued again)."""
        log.warning(
            "q%d from %s failed: the model server stayed unavailable; the asker gets an apology",
            query.query_id,
            node_id(query.node),
            extra={"event": Event.FAILED, "reason": Reason.MODEL_UNAVAILABLE, "query_id": query.query_id},
        )
        self._ledger.failed(query.query_id, Reason.MODEL_UNAVAILABLE)
        self._metrics.question(seen(query, "failed", self._clock.now(), reason=Reason.MODEL_UNAVAILABLE))
        decision = query.decision
        apology = labelled(MODEL_APOLOGY, self._cfg.mesh.ai_tag, fragment_budget(self._cfg, query))
        out = Outbound(apology, decision.reply_to, decision.reply_channel, decision.want_ack, query.inbound.packet_id)
        self._sender.submit(SendJob(out, f"q{query.query_id} apology"))

    def _more(self, query: Query) -> None:
        budget = fragment_budget(self._cfg, query)
        kept = self._store.take_remainder(remainder_slot(query.inbound), REMAINDER_TTL_S)
        if kept is None or not kept[0].strip():
            self._submit_one(query, 1, labelled(NOTHING_MORE, self._cfg.mesh.ai_tag, budget), "more: none")
            self._ledger.generated(query)
            return
        text, next_index = kept
        allowed = self._fragments_allowed(query, budget) or 1
        plan = fragment(text, budget, allowed, next_index, tag=self._cfg.mesh.ai_tag)
        sent: list[Fragment] = []
        self._submit(query, list(plan.fragments), sent, self._clock.now())
        if plan.remainder.strip() and plan.fragments:
            self._keep_remainder(query, plan.remainder, plan.fragments[-1].index + 1)
        self._ledger.generated(query)
        log.info(
            "more for %s: %d fragment(s), %d B left",
            node_id(query.node),
            len(sent),
            len(plan.remainder.encode("utf-8")),
            extra={"event": Event.MORE, "fragments": len(sent)},
        )

    def _keep_remainder(self, query: Query, text: str, next_index: int) -> None:
        """Keep text for "more"; after the fragments the sender held, if it held this answer."""
        holdback, slot = self._sender.holdback, remainder_slot(query.inbound)  # the asker's own conversation's
        if holdback is None:
            self._store.put_remainder(slot, text, next_index)
        else:
            holdback.keep_tail(query.query_id, slot, text, next_index)

    def _submit(self, query: Query, fragments: list[Fragment], sent: list[Fragment], started: float) -> None:
        for frag in fragments:
            if not sent:
                ttff = self._clock.now() - started
                log.info(
                    "first fragment of q%d ready after %.2fs",
                    query.query_id,
                    ttff,
                    extra={"event": Event.FIRST_FRAGMENT, "ttff_s": round(ttff, 3)},
                )
                self._metrics.first_fragment(ttff)
                self._store.record_event("ttff", ttff)
            sent.append(frag)
            if frag.index in query.skip:
                log.info(
                    "skipped q%d fragment %d: delivered before the restart",
                    query.query_id,
                    frag.index,
                    extra={"event": Event.SKIPPED_DELIVERED},
                )
                continue
            marker = f"{frag.index}/{frag.index if frag.final else '+'}"
            self._submit_one(query, frag.index, frag.text, marker)

    def _submit_one(self, query: Query, index: int, text: str, marker: str) -> None:
        decision = query.decision
        self._ledger.fragment(query, index, text)  # durable before it can reach the air
        out = Outbound(
            text=text,
            dest=decision.reply_to,
            channel=decision.reply_channel,
            want_ack=decision.want_ack,
            reply_id=query.inbound.packet_id,
        )
        self._sender.submit(
            SendJob(
                out,
                f"q{query.query_id} {marker}",
                query.query_id,
                index,
                on_done=self._ledger.on_sent,
                asker=remainder_slot(query.inbound),  # where a held rest is kept: this conversation's slot
                urgent=query.emergency,
            )
        )

    def _log_answered(
        self,
        query: Query,
        stats: GenerationStats,
        sent: list[Fragment],
        started: float,
        capped: bool,
        energy: tuple[float, str] | None = None,
    ) -> None:
        elapsed = self._clock.now() - started
        gen_s = stats.total_s or elapsed
        # The model's decode rate when it reports one; otherwise tokens over the whole generation.
        tps = stats.extra.get("tokens_per_s") or (stats.completion_tokens / gen_s if gen_s > 0 else 0.0)
        nbytes = sum(f.nbytes for f in sent)
        ttft = stats.first_token_s if stats.first_token_s is not None else float("nan")
        joules, how = energy if energy is not None else (None, None)
        log.info(
            "answered q%d for %s: first token %.2fs, %d tokens, %.1f tok/s, %d fragment(s), %d B%s%s",
            query.query_id,
            node_id(query.node),
            ttft,
            stats.completion_tokens,
            tps,
            len(sent),
            nbytes,
            " (more kept)" if capped else "",
            f", {joules:.1f} J ({how})" if joules is not None else "",
            extra={
                "energy_j": None if joules is None else round(joules, 3),
                "energy_method": how,
                "event": Event.ANSWERED,
                "ttft_s": ttft,
                "tokens": stats.completion_tokens,
                "tokens_per_s": round(tps, 2),
                "fragments": len(sent),
                "bytes": nbytes,
            },
        )
        self._metrics.tokens(stats.completion_tokens)
        self._metrics.question(seen(query, "answered", self._clock.now(), len(sent)))
