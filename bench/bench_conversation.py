"""Conversation benchmark: a 4th-turn follow-up's time to first fragment against the same question asked cold.

One process, the bundled model, the daemon's own answer pipeline (`AnswerStream`: model stream, tidy, fragmenter)
on the model's engine thread, as the worker runs it. For N conversations of 4 questions:
  1. turns 1-3 of every conversation, round-robin: the engine's live state never holds the asker's conversation
     when its next turn comes, as on a mesh with several people asking, so only the saved-state LRU can help;
  2. per conversation, in alternating order: question 4 asked cold (no history) and as the follow-up (3 earlier
     exchanges in the prompt), each timed to its first fragment;
  3. the follow-up once more with the saved states out of reach (the cost of re-reading the whole history).
Turns 1-3 are read to the end, as the daemon reads them, so memory holds the whole answers (longer than the
fragment cap); the saved states that no longer fit in RAM go to the disk tier, as they do in the daemon.
Prints a row per conversation, the medians and their ratio (target <= 1.15), and the RAM of the saved states.
Not a test: figures vary by machine.

    .venv/bin/python bench/bench_conversation.py [--threads N] [--conversations N] [--kv-mb MB]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench import RssSampler, machine
from meshbot.core.config import ModelConfig, load_config
from meshbot.core.domain import ChatTurn
from meshbot.core.prompting import build_generation
from meshbot.models.llama import load_model
from meshbot.service.answering import AnswerStream

SEED = 1234
# A first fragment this long in tokens is a full one (190 bytes); shorter, the whole answer fit in it.
FULL_FRAGMENT_TOKENS = 30

CONVERSATIONS = [
    ("What is LoRa?", "How far can it reach?", "Does rain affect it?", "What antenna should I use?"),
    ("How do I purify water when camping?", "Is boiling enough?", "How long should I boil it?", "And at altitude?"),
    ("Why is the sky blue?", "Why is it red at sunset?", "Is it the same on Mars?", "What colour is it there?"),
    ("How do I start a campfire?", "What wood burns best?", "What if it is wet?", "How do I put it out?"),
    ("What is a mesh network?", "How does a message find its way?", "What is a hop?", "How many hops are too many?"),
    ("How does a solar panel work?", "How big a panel for a radio?", "Does it work in winter?", "What battery then?"),
    ("What should I pack for a hike?", "How much water?", "What about food?", "And for an overnight trip?"),
    ("How do I treat a small burn?", "Should I use ice?", "When is it serious?", "What about blisters?"),
    ("What is a repeater?", "Where should I put one?", "How high up?", "Does it need much power?"),
    ("How do bees make honey?", "Why do they need so much?", "Can honey go bad?", "How should I store it?"),
]


@dataclasses.dataclass
class Timing:
    """One answer's way to its first fragment."""

    first_fragment_s: float = 0.0
    first_token_s: float = 0.0  # prompt evaluation (and restore): what the history can cost
    tokens: int = 0  # written before the first fragment was full

    @property
    def per_token_s(self) -> float:
        """Decode time per token on the way to the first fragment."""
        return (self.first_fragment_s - self.first_token_s) / max(self.tokens - 1, 1)

    def at_length(self, tokens: int) -> float:
        """The time to a first fragment of `tokens` tokens, at this answer's prompt and decode speed."""
        return self.first_token_s + self.per_token_s * max(tokens - 1, 0)


@dataclasses.dataclass
class Row:
    """One conversation's 4th question, three ways."""

    question: str
    cold: Timing = dataclasses.field(default_factory=Timing)
    follow: Timing = dataclasses.field(default_factory=Timing)
    reread: Timing = dataclasses.field(default_factory=Timing)
    prompt_tokens: int = 0  # of the follow-up
    cached_tokens: int = 0  # of those, how many the restored state already held

    @property
    def same_length_ratio(self) -> float:
        """Follow-up over cold, had both written the cold answer's first fragment (same token count)."""
        return self.follow.at_length(self.cold.tokens) / self.cold.first_fragment_s


def ask(model, cfg, question: str, history: list[ChatTurn], *, whole: bool, asker: str) -> tuple[Timing, AnswerStream]:
    """Time to the first fragment of one answer, on the engine thread; `whole` reads every fragment sent."""
    budget, fragments = cfg.mesh.max_fragment_bytes, cfg.mesh.max_fragments
    request = build_generation(question, cfg, budget, fragments, history)
    # As the worker asks: the conversation names whose saved state this is (one kept per conversation).
    request = dataclasses.replace(request, seed=SEED, conversation=asker)
    answer = AnswerStream(model, request, budget, fragments)

    def run() -> Timing:
        started = time.monotonic()
        timing = None
        fragments_of = iter(answer)
        try:
            for _ in fragments_of:
                if timing is None:
                    timing = Timing(time.monotonic() - started, answer.stats.first_token_s or 0.0, answer.tokens)
                # Turns 1-3 are read to the end, as the daemon reads them (past the fragment cap it writes
                # the text kept for "more", and memory keeps the whole answer).
                if not whole:
                    break
        finally:
            fragments_of.close()  # stops the engine here, on its own thread
        return timing or Timing(time.monotonic() - started, answer.stats.first_token_s or 0.0, answer.tokens)

    return model.run(run), answer


def exchange(question: str, answer: AnswerStream) -> list[ChatTurn]:
    # As the memory stores it: the question and the tidied answer text.
    return [ChatTurn("user", question), ChatTurn("assistant", answer.text)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conversations", type=int, default=len(CONVERSATIONS))
    parser.add_argument("--kv-mb", type=float, default=ModelConfig().kv_cache_mb)
    args = parser.parse_args()
    convs = CONVERSATIONS[: args.conversations]
    cfg = load_config(environ={})
    rss = RssSampler()
    model = load_model(ModelConfig(threads=args.threads, seed=SEED, kv_cache_mb=args.kv_mb))
    cache = model.kv_cache
    assert cache is not None, "--kv-mb 0 turns the cache off: nothing to measure"
    started = time.monotonic()
    histories: list[list[ChatTurn]] = [[] for _ in convs]
    rss.reset()
    before_kb = rss.current_kb()
    for turn in range(3):
        for i, conv in enumerate(convs):
            _, answer = ask(model, cfg, conv[turn], histories[i], whole=True, asker=f"asker{i}")
            histories[i] += exchange(conv[turn], answer)
    saved_bytes, saved_entries = cache.nbytes, len(cache)
    spilled = (len(cache.spill), cache.spill.nbytes) if cache.spill is not None else (0, 0)
    rss_growth_mb = (rss.current_kb() - before_kb) / 1024
    rows = [Row(conv[3]) for conv in convs]
    for i, (conv, row) in enumerate(zip(convs, rows, strict=True)):
        order = ("cold", "follow") if i % 2 == 0 else ("follow", "cold")
        for kind in order:
            if kind == "cold":
                # Asked cold by someone else: a new conversation, with a state of its own.
                row.cold, _ = ask(model, cfg, conv[3], [], whole=False, asker=f"newcomer{i}")
            else:
                row.follow, answer = ask(model, cfg, conv[3], histories[i], whole=False, asker=f"asker{i}")
                row.prompt_tokens = answer.stats.prompt_tokens
                row.cached_tokens = int(answer.stats.extra.get("cached_tokens", 0))
    model.kv_cache = None  # the saved states out of reach: the follow-up re-reads its whole history
    for i, (conv, row) in enumerate(zip(convs, rows, strict=True)):
        model.on_engine(lambda llm: llm.reset())
        row.reread, _ = ask(model, cfg, conv[3], histories[i], whole=False, asker=f"asker{i}")
    model.kv_cache = cache
    print_table(rows, model.name, args.threads, saved_bytes, saved_entries, rss_growth_mb, cache.capacity_bytes)
    print(f"states past that RAM, on disk (model.kv_spill_mb): {spilled[0]}, {spilled[1] / 1e6:.1f} MB")
    print(f"\n{machine()}; {time.monotonic() - started:.0f} s")
    model.close()
    return 0


def print_table(
    rows: list[Row], name: str, threads: int, saved: int, entries: int, rss_mb: float, capacity: int
) -> None:
    print(f"model: {name}, {threads} threads; {len(rows)} conversations; seed {SEED}; time to first fragment (s)\n")
    print(
        "| # | 4th question | cold | 4th-turn follow-up | ratio | first token cold / follow-up | "
        "tokens to 1st fragment cold / follow-up | same-length ratio | follow-up tokens (reused) | re-read history |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, r in enumerate(rows, 1):
        c, f = r.cold, r.follow
        print(
            f"| {n} | {r.question[:32]} | {c.first_fragment_s:.3f} | {f.first_fragment_s:.3f} | "
            f"{f.first_fragment_s / c.first_fragment_s:.2f} | {c.first_token_s:.3f} / {f.first_token_s:.3f} | "
            f"{c.tokens} / {f.tokens} | {r.same_length_ratio:.2f} | {r.prompt_tokens} ({r.cached_tokens}) | "
            f"{r.reread.first_fragment_s:.3f} |"
        )
    cold = statistics.median(r.cold.first_fragment_s for r in rows)
    follow = statistics.median(r.follow.first_fragment_s for r in rows)
    reread = statistics.median(r.reread.first_fragment_s for r in rows)
    same = statistics.median(r.same_length_ratio for r in rows)
    verdict = "ok" if same <= 1.15 else "OVER TARGET"
    print(f"\nmedian time to first fragment: cold {cold:.3f} s, follow-up {follow:.3f} s (ratio {follow / cold:.2f});")
    print(
        "  the two answers differ, and so do their first fragments' lengths in tokens; at the same length"
        f" (the cold one's), median ratio {same:.2f} (target <= 1.15: {verdict})"
    )
    full = [r for r in rows if min(r.cold.tokens, r.follow.tokens) >= FULL_FRAGMENT_TOKENS]
    if full:
        ratios = sorted(r.follow.first_fragment_s / r.cold.first_fragment_s for r in full)
        print(
            f"where both first fragments are full (>= {FULL_FRAGMENT_TOKENS} tokens each: rows "
            f"{', '.join(str(rows.index(r) + 1) for r in full)}), median ratio {statistics.median(ratios):.2f} "
            f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})"
        )
    first_c = statistics.median(r.cold.first_token_s for r in rows)
    first_f = statistics.median(r.follow.first_token_s for r in rows)
    print(f"median first token: cold {first_c:.3f} s, follow-up {first_f:.3f} s (ratio {first_f / first_c:.2f})")
    print(f"median follow-up re-reading its history without saved states: {reread:.3f} s ({reread / cold:.2f}x cold)")
    print(
        f"KV cache after 3 turns: {entries} saved state(s), {saved / 1e6:.1f} MB "
        f"({saved / 1e6 / max(entries, 1):.1f} MB per conversation) of {capacity / 1e6:.0f} MB; "
        f"process RSS grew {rss_mb:.0f} MB over those turns"
    )


if __name__ == "__main__":
    raise SystemExit(main())
