"""Conversation benchmark: a 4th-turn follow-up's time to first fragment against the same question asked cold.

One process, the bundled model, the daemon's own answer pipeline (`AnswerStream`: model stream, tidy, fragmenter)
on the model's engine thread, as the worker runs it. For N conversations of 4 questions:
  1. turns 1-3 of every conversation, round-robin: the engine's live state never holds the asker's conversation
     when its next turn comes, as on a mesh with several people asking, so only the saved-state LRU can help;
  2. per conversation, in alternating order: question 4 asked cold (no history) and as the follow-up (3 earlier
     exchanges in the prompt), each timed to its first fragment;
  3. the follow-up once more with the saved states out of reach (the cost of re-reading the whole history).
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
class Row:
    """One conversation's 4th question, three ways."""

    question: str
    cold_s: float = 0.0
    follow_s: float = 0.0
    reread_s: float = 0.0
    prompt_tokens: int = 0  # of the follow-up
    cached_tokens: int = 0  # of those, how many the restored state already held


def ask(model, cfg, question: str, history: list[ChatTurn], *, whole: bool) -> tuple[float, AnswerStream]:
    """Time to the first fragment of one answer, on the engine thread; `whole` reads every fragment sent."""
    budget, fragments = cfg.mesh.max_fragment_bytes, cfg.mesh.max_fragments
    request = dataclasses.replace(build_generation(question, cfg, budget, fragments, history), seed=SEED)
    answer = AnswerStream(model, request, budget, fragments)

    def run() -> float:
        started = time.monotonic()
        first = None
        fragments_of = iter(answer)
        try:
            for _ in fragments_of:
                first = time.monotonic() - started if first is None else first
                # Turns 1-3 are read up to the fragment cap (what goes on air); the daemon would go on to
                # write the text kept for "more", which only lengthens the history (and this run's time).
                if not whole or answer.capped:
                    break
        finally:
            fragments_of.close()  # stops the engine here, on its own thread
        return first if first is not None else time.monotonic() - started

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
            _, answer = ask(model, cfg, conv[turn], histories[i], whole=True)
            histories[i] += exchange(conv[turn], answer)
    saved_bytes, saved_entries = cache.nbytes, len(cache)
    rss_growth_mb = (rss.current_kb() - before_kb) / 1024
    rows = [Row(conv[3]) for conv in convs]
    for i, (conv, row) in enumerate(zip(convs, rows, strict=True)):
        order = ("cold", "follow") if i % 2 == 0 else ("follow", "cold")
        for kind in order:
            if kind == "cold":
                row.cold_s, _ = ask(model, cfg, conv[3], [], whole=False)
            else:
                row.follow_s, answer = ask(model, cfg, conv[3], histories[i], whole=False)
                row.prompt_tokens = answer.stats.prompt_tokens
                row.cached_tokens = int(answer.stats.extra.get("cached_tokens", 0))
    model.kv_cache = None  # the saved states out of reach: the follow-up re-reads its whole history
    for i, (conv, row) in enumerate(zip(convs, rows, strict=True)):
        model.on_engine(lambda llm: llm.reset())
        row.reread_s, _ = ask(model, cfg, conv[3], histories[i], whole=False)
    model.kv_cache = cache
    print_table(rows, model.name, args.threads, saved_bytes, saved_entries, rss_growth_mb, cache.capacity_bytes)
    print(f"\n{machine()}; {time.monotonic() - started:.0f} s")
    model.close()
    return 0


def print_table(
    rows: list[Row], name: str, threads: int, saved: int, entries: int, rss_mb: float, capacity: int
) -> None:
    print(f"model: {name}, {threads} threads; {len(rows)} conversations; seed {SEED}; time to first fragment (s)\n")
    print("| # | 4th question | cold | 4th-turn follow-up | ratio | follow-up tokens (reused) | re-read history |")
    print("|---|---|---|---|---|---|---|")
    for n, r in enumerate(rows, 1):
        ratio = r.follow_s / r.cold_s if r.cold_s else float("nan")
        print(
            f"| {n} | {r.question[:32]} | {r.cold_s:.3f} | {r.follow_s:.3f} | {ratio:.2f} | "
            f"{r.prompt_tokens} ({r.cached_tokens}) | {r.reread_s:.3f} |"
        )
    cold = statistics.median(r.cold_s for r in rows)
    follow = statistics.median(r.follow_s for r in rows)
    reread = statistics.median(r.reread_s for r in rows)
    verdict = "ok" if follow / cold <= 1.15 else "OVER TARGET"
    print(
        f"\nmedian cold {cold:.3f} s, follow-up {follow:.3f} s: ratio {follow / cold:.2f} (target <= 1.15: {verdict})"
    )
    print(f"median follow-up re-reading its history without saved states: {reread:.3f} s ({reread / cold:.2f}x cold)")
    print(
        f"KV cache after 3 turns: {entries} saved state(s), {saved / 1e6:.1f} MB "
        f"({saved / 1e6 / max(entries, 1):.1f} MB per conversation) of {capacity / 1e6:.0f} MB; "
        f"process RSS grew {rss_mb:.0f} MB over those turns"
    )


if __name__ == "__main__":
    raise SystemExit(main())
