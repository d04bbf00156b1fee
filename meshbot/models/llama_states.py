"""The llama backend's KV state across turns: restore the best saved state before a prompt; settle and save after.

The saved states themselves live in `prompt_cache` (RAM, then disk); this is the part that talks to the engine.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from collections.abc import Sequence
from typing import Any

from meshbot.core.config import ModelConfig
from meshbot.core.domain import GenerationStats
from meshbot.models.kv_shift import Shift, find_shift
from meshbot.models.prompt_cache import PrefixCache, Saved, SpillDir, common_prefix, pages

log = logging.getLogger(__name__)


def kv_cache(cfg: ModelConfig) -> PrefixCache | None:
    """The saved-state cache `model.kv_cache_mb` and `model.kv_spill_mb` ask for; None when off."""
    capacity, spill_bytes = int(cfg.kv_cache_mb * 1_000_000), int(cfg.kv_spill_mb * 1_000_000)
    if capacity <= 0:
        return None
    spill = None
    if spill_bytes > 0:
        try:
            spill = SpillDir(spill_bytes, cfg.kv_spill_dir or None)
        except OSError as exc:  # costs only time: states that leave RAM are then dropped
            log.warning("model.kv_spill_dir: cannot make a directory for saved KV states (%s); RAM only", exc)
    return PrefixCache(capacity, spill)


class EngineStates:
    """One engine's states: `reuse` before a prompt, `save` after its answer. Engine thread only."""

    def __init__(self, llm: Any, lib: Any, cache: PrefixCache | None, n_ctx: int) -> None:
        self._llm, self._lib, self.cache, self._n_ctx = llm, lib, cache, n_ctx
        # The template's tokens between an answer and the next question: where whole exchanges end.
        self.joint: list[int] = []

    def reuse(self, prompt: list[int], stats: GenerationStats, conversation: str | None = None) -> None:
        """Restore the saved state sharing the most of `prompt`, when it beats what the engine holds now.

        The conversation's own state also serves a prompt that left its oldest exchanges out: they are removed
        from it and the rest moved down (a context shift), so a conversation past its history bound still
        evaluates only its new question.
        """
        # The engine itself keeps the longest prefix its live state shares with the prompt (llama-cpp-python's
        # prefix match); a saved state only helps when another conversation ran in between.
        llm = self._llm
        shared = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), prompt)
        restored, dropped = False, 0
        found = self.cache.best(prompt, better_than=shared) if self.cache is not None else None
        plan, own = self._shift_plan(prompt, conversation, found[1] if found else shared)
        if plan is not None and own is not None:
            restored = self._load(own) and self._shift(plan, prompt)
            shared, dropped = (plan.reused, plan.dropped) if restored else (0, 0)
        elif found is not None:
            restored = self._load(found[0])
            shared = found[1] if restored else 0
        # However much is shared, the engine evaluates the prompt's last token again for fresh logits.
        stats.extra["cached_tokens"] = float(min(shared, len(prompt) - 1))
        stats.extra["kv_restored"] = 1.0 if restored else 0.0
        stats.extra["kv_shifted_out"] = float(dropped)
        self._perf_reset()

    def _shift_plan(
        self, prompt: list[int], conversation: str | None, better_than: int
    ) -> tuple[Shift | None, Saved | None]:
        """A shift of the conversation's own state, when it holds more of `prompt` than `better_than` tokens."""
        if self.cache is None or conversation is None or not self._can_shift():
            return None, None
        own = self.cache.of_conversation(conversation)
        plan = find_shift(own.tokens, prompt, self.joint) if own is not None else None
        if plan is None or plan.reused <= better_than:
            return None, None
        return plan, own

    def _can_shift(self) -> bool:
        memory = self._lib.llama_get_memory(self._llm._ctx.ctx)
        return memory is not None and bool(self._lib.llama_memory_can_shift(memory))

    def _shift(self, plan: Shift, prompt: list[int]) -> bool:
        """Remove the dropped block from the restored state and move the kept run down; False: reset instead."""
        llm, lib = self._llm, self._lib
        memory = lib.llama_get_memory(llm._ctx.ctx)
        start, end = plan.head + plan.dropped, plan.head + plan.dropped + plan.kept
        # Sequence 0: the only one llama-cpp-python's Llama uses.
        if not (lib.llama_memory_seq_rm(memory, 0, plan.head, start) and lib.llama_memory_seq_rm(memory, 0, end, -1)):
            log.warning("could not shift a saved KV state; evaluating the whole prompt")
            llm.reset()
            return False
        # RoPE models apply the move to their keys at the next decode (llama.cpp's K-shift).
        lib.llama_memory_seq_add(memory, 0, start, end, -plan.dropped)
        n = plan.reused
        llm.input_ids[:n] = prompt[:n]
        llm.n_tokens = n
        return True

    def _perf_reset(self) -> None:
        self._lib.llama_perf_context_reset(self._llm._ctx.ctx)

    def prompt_evaluated(self, prompt_tokens: int) -> int:
        """Prompt tokens the engine decoded since `reuse` (llama.cpp's own count), less the answer's so far."""
        perf = self._lib.llama_perf_context(self._llm._ctx.ctx)
        generated: int = max(int(self._llm.n_tokens) - prompt_tokens, 0)
        decoded: int = int(perf.n_p_eval) + int(perf.n_eval)
        return decoded - generated

    def _load(self, saved: Saved) -> bool:
        llm, data, size = self._llm, saved.data, len(saved.data)
        # llama.cpp only reads it: a pointer to the saved bytes, not a copy (30 MB, 15-60 ms on the first token's path).
        if isinstance(data, mmap.mmap):
            buffer: Any = (ctypes.c_uint8 * size).from_buffer(data)
        else:
            buffer = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))
        read = self._lib.llama_state_set_data(llm._ctx.ctx, buffer, size)
        del buffer  # the mapping's export: held, the state could not be unmapped when dropped
        if read != size:
            log.warning("could not restore a saved KV state; evaluating the whole prompt")
            llm.reset()
            return False
        n = len(saved.tokens)
        llm.input_ids[:n] = saved.tokens
        llm.n_tokens = n
        llm._requires_eval = True  # restored logits are not trusted: the engine decodes a token first
        return True

    def save(
        self, prompt_tokens: int, settled: Sequence[list[int]], conversation: str | None, stats: GenerationStats
    ) -> None:
        """Settle the state to the cheapest of `settled` (none: the prompt and answer it holds) and keep it.

        Each of `settled` is what the follow-up's prompt may start with: the history as memory keeps it (the
        question without its notes, the answer tidied), up to the next question's text; the first is the
        history memory will give it, past its bound without the oldest exchange.
        """
        llm = self._llm
        try:
            # Also without the cache: the engine's own prefix match reuses the settled state.
            stats.extra["kv_settled_out"] = float(self._settle(prompt_tokens, settled))
            if self.cache is None or llm.n_tokens == 0:
                return
            self.cache.put(llm.input_ids[: llm.n_tokens].tolist(), self._state(), conversation)
        except (RuntimeError, ValueError, MemoryError) as exc:  # a lost cache entry only costs time
            log.warning("could not save the KV state for reuse: %s", exc)
            llm.reset()

    def _state(self) -> mmap.mmap:
        """The engine's state, written by llama.cpp straight into pages of its own."""
        ctx = self._llm._ctx.ctx
        size = self._lib.llama_state_get_size(ctx)
        data = pages(size)
        buffer = (ctypes.c_uint8 * size).from_buffer(data)
        written = self._lib.llama_state_get_data(ctx, buffer, size)
        del buffer
        if written == size:
            return data
        exact = pages(written)  # `_load` hands llama.cpp the whole mapping: it must be the state's exact size
        exact[:] = data[:written]
        return exact

    def _settle(self, prompt_tokens: int, settled: Sequence[list[int]]) -> int:
        """Evaluate, as one batch, what the chosen target holds past the part it shares with the engine's state.

        Returns the tokens shifted out (an exchange the target left out), else 0.
        """
        # Never the sampled tokens kept: sampling evaluated them one at a time, which rounds differently from a
        # batch, so a follow-up reusing that state would not be the answer its seed gives from scratch, and a
        # crashed follow-up, regenerated at the next start, would not match the fragments already delivered.
        # A target ends with the answer as memory keeps it and the template's text that opens the next question:
        # the follow-up evaluates only its own words; should its prompt differ, the prefix match keeps only what
        # is shared. Off the first fragment's path: the answer is written; the sender is still pacing it on air.
        llm = self._llm
        held = llm.input_ids[: llm.n_tokens].tolist()
        choice = self._cheapest(held[:prompt_tokens], settled or [held])
        if choice is None:
            return 0
        target, keep, plan = choice
        dropped = 0
        if plan is not None:
            # The eval below applies the K-shift before the state is saved: saved with it pending, it is wrong.
            keep, dropped = (plan.reused, plan.dropped) if self._shift(plan, target) else (0, 0)
        tail = target[keep:]
        if len(tail) > 1:
            llm.n_tokens = keep
            llm.eval(tail)
        return dropped

    def _cheapest(self, prompt: list[int], targets: Sequence[list[int]]) -> tuple[list[int], int, Shift | None] | None:
        """The target that costs the fewest tokens to evaluate (first of equals), its kept prefix and any shift."""
        # Past the history bound the first target has left the oldest exchange out: shifted to it here, the next
        # question restores a compact state and evaluates only its own words (a shift on that question's path
        # would cost it the K-shift and attention over the span the removed cells left). A model that cannot
        # shift would re-read the whole history for it: the plain target is cheaper then.
        best: tuple[int, list[int], int, Shift | None] | None = None
        for target in targets:
            if len(target) > self._n_ctx:
                continue
            keep = common_prefix(prompt, target)
            plan = find_shift(prompt, target, self.joint) if self._can_shift() else None
            if plan is None or plan.reused <= keep or len(target) - plan.reused < 2:
                plan = None
            cost = len(target) - (plan.reused if plan is not None else keep)
            if best is None or cost < best[0]:
                best = (cost, target, keep, plan)
        return None if best is None else best[1:]

    def close(self) -> None:
        """Drop every saved state (the disk tier's directory too)."""
        if self.cache is not None:
            self.cache.close()
