"""Per-node conversation memory: a `ContextSource` that puts a conversation's recent exchanges into its prompt.

Bounded three ways: the newest `[memory] turns` exchanges; of those, only as many (newest first) as fit in
`max_history_tokens` and in what `n_ctx` leaves after the system prompt, the question and the reply; and a
conversation idle for `idle_expiry_s` is forgotten. The history a question starts with is stored with it,
so a question resumed after a crash is answered with the very same history. `forget` is what `!reset` calls.

Where the exchanges live is a `MemoryTables`: the worker's own store (storage.memory.MemoryTable), or with
several workers the shared one (cluster.memory.SharedMemory); `app.compose` chooses.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Protocol

from meshbot.core.config import Config
from meshbot.core.domain import ChatTurn, Context
from meshbot.core.events import Event
from meshbot.core.ids import node_id
from meshbot.core.prompting import BYTES_PER_TOKEN_PLANNED
from meshbot.service.queueing import Query
from meshbot.storage.memory import DM, Asked, Exchange, Snapshot

log = logging.getLogger(__name__)

# Chat-template tokens around one message (ChatML: "<|im_start|>user\n" ... "<|im_end|>\n"), with room to spare.
MESSAGE_OVERHEAD_TOKENS = 6
# Tokens a placeholder in the system prompt ({budget_bytes}, {name}) may add once filled in.
SYSTEM_SLACK_TOKENS = 16

TokenCounter = Callable[[str], int]


class MemoryTables(Protocol):
    """Where conversations and the histories questions were asked with are kept."""

    def now(self) -> float:
        """Wall-clock epoch seconds, the clock `Exchange.at` is on."""

    def recent(self, node: int, channel: int | None, limit: int) -> list[Exchange]:
        """The conversation's newest `limit` exchanges, oldest first."""

    def add(self, node: int, channel: int | None, asked: Asked, exchange: Exchange, keep: int, idle_s: float) -> None:
        """Remember an answered exchange once per question, keep the newest `keep`, restart the idle clock."""

    def forget(self, node: int, channel: int | None) -> int:
        """Delete the conversation; how many exchanges it had."""

    def save_snapshot(self, asked: Asked, node: int, channel: int | None, history: Sequence[Exchange]) -> None:
        """Keep the history `asked` is being asked with (the first one wins)."""

    def snapshot(self, asked: Asked) -> Snapshot | None:
        """The conversation and history `asked` started with, until it is answered."""


def estimate_tokens(text: str) -> int:
    """Tokens `text` may take, sized for the densest script we plan for (never an underestimate in practice)."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN_PLANNED)


def asked(query: Query) -> Asked:
    """The question as memory tables know it: local id and asking packet (the same on a worker that takes it over)."""
    return Asked(query.query_id, query.inbound.sender, query.inbound.packet_id)


def _where(channel: int | None) -> str:
    return "DM" if channel is None or channel == DM else f"channel {channel}"


class ConversationMemory:
    """Recent exchanges per (node, channel), in its tables; a context source for the worker."""

    def __init__(self, table: MemoryTables, cfg: Config, count_tokens: TokenCounter | None = None) -> None:
        self._table = table
        self._cfg = cfg
        self._mem = cfg.memory
        # The model's own tokenizer when it has one (exact), else a conservative estimate by bytes.
        self._count = count_tokens or estimate_tokens

    def gather(self, query: Query, context: Context) -> Context:
        """Add the history this question is asked with: the stored one when it is resumed."""
        if not self._mem.enabled:
            return context
        snapshot = self._table.snapshot(asked(query))
        if snapshot is not None:
            history = list(snapshot.history)
            log.debug("q%d resumed with the %d exchange(s) it was asked with", query.query_id, len(history))
        else:
            node, channel = query.conversation
            history = self._recall(node, channel, query.decision.question)
            self._table.save_snapshot(asked(query), node, channel, history)
        if history:
            log.debug("q%d asked with %d earlier exchange(s)", query.query_id, len(history))
        follow_up = functools.partial(self.following, tuple(history))
        return dataclasses.replace(context, history=context.history + _turns(history), follow_up=follow_up)

    def following(self, history: Sequence[Exchange], question: str, answer: str) -> tuple[ChatTurn, ...]:
        """The history the next question will be asked with, once this exchange is remembered.

        The bounds as `_recall` applies them, with the room a short next question leaves (the configured bound,
        as a rule): a backend settles its state to this, so the next prompt finds it already in shape.
        """
        kept = [*history, self._exchange(question, answer)] if answer.strip() else list(history)  # as `answered`
        exchanges = kept[-self._mem.turns :] if self._mem.turns else []
        return _turns(_newest_fitting(exchanges, self.history_room("")))

    def answered(self, query: Query, question: str, answer: str) -> None:
        """Remember the exchange in the conversation the question was asked in."""
        if not self._mem.enabled or not answer.strip():
            return
        snapshot = self._table.snapshot(asked(query))
        node, channel = (snapshot.node, snapshot.channel) if snapshot else query.conversation
        exchange = self._exchange(question, answer)
        # One exchange more than a prompt may hold: whether a history left an older one out stays visible.
        self._table.add(node, channel, asked(query), exchange, self._kept(), self._mem.idle_expiry_s)

    def _exchange(self, question: str, answer: str) -> Exchange:
        tokens = self._count(question) + self._count(answer) + 2 * MESSAGE_OVERHEAD_TOKENS
        return Exchange(question, answer, tokens, self._table.now())

    def _kept(self) -> int:
        return self._mem.turns + 1 if self._mem.turns else 0

    def regenerates_alike(self, query: Query) -> bool:
        """Whether a fresh evaluation of the question's prompt gives the text its first generation gave.

        Not once its conversation has left an exchange out: from then on the llama backend served its turns from
        a saved state with the left-out tokens shifted out (models.kv_shift), which a fresh evaluation, without
        them, does not reproduce. A question that never had a history is always alike.
        """
        if not self._mem.enabled or not self._mem.turns:
            return True
        snapshot = self._table.snapshot(asked(query))
        if snapshot is None:
            return True
        remembered = self._table.recent(snapshot.node, snapshot.channel, self._kept())
        if not remembered:
            return True
        return bool(snapshot.history) and remembered[0] == snapshot.history[0]

    def forget(self, node: int, channel: int | None) -> None:
        """Forget the conversation of `node` on `channel` (None: the DM conversation): what `!reset` does."""
        removed = self._table.forget(node, channel)
        log.info(
            "forgot the conversation with %s (%s): %d exchange(s)",
            node_id(node),
            _where(channel),
            removed,
            extra={"event": Event.MEMORY_FORGOTTEN, "exchanges": removed},
        )

    def _recall(self, node: int, channel: int | None, question: str) -> list[Exchange]:
        """The conversation's newest exchanges that fit every bound, oldest first; forgets an idle one."""
        recent = self._table.recent(node, channel, self._mem.turns)
        if recent and self._table.now() - recent[-1].at > self._mem.idle_expiry_s:
            removed = self._table.forget(node, channel)
            log.info(
                "conversation with %s (%s) idle for over %.0fs: forgot %d exchange(s)",
                node_id(node),
                _where(channel),
                self._mem.idle_expiry_s,
                removed,
                extra={"event": Event.MEMORY_EXPIRED, "exchanges": removed},
            )
            return []
        return _newest_fitting(recent, self.history_room(question))

    def history_room(self, question: str) -> int:
        """Tokens history may take for `question`: the configured bound, and what n_ctx leaves over."""
        fixed = (
            self._count(self._cfg.persona.system_prompt)
            + SYSTEM_SLACK_TOKENS
            + self._count(question)
            + 2 * MESSAGE_OVERHEAD_TOKENS
            + self._cfg.model.max_tokens_cap
        )
        return max(0, min(self._mem.max_history_tokens, self._cfg.model.n_ctx - fixed))


def _newest_fitting(exchanges: Sequence[Exchange], room: int) -> list[Exchange]:
    """The newest of `exchanges` whose tokens fit in `room` together, oldest first."""
    kept: list[Exchange] = []
    used = 0
    for exchange in reversed(exchanges):  # newest first: the oldest are the ones left out
        if used + exchange.tokens > room:
            break
        kept.append(exchange)
        used += exchange.tokens
    kept.reverse()
    return kept


def _turns(exchanges: Sequence[Exchange]) -> tuple[ChatTurn, ...]:
    turns: list[ChatTurn] = []
    for exchange in exchanges:
        turns += [ChatTurn("user", exchange.question), ChatTurn("assistant", exchange.answer)]
    return tuple(turns)
