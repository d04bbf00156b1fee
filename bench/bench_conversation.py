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

With --long: conversations of 8 detailed questions whose answers hit the token cap (384), with the default
`[memory]` bounds applied by the daemon's own ConversationMemory, so the history passes `max_history_tokens` by the
4th turn and the oldest exchanges leave the prompt. Every turn, round-robin over the conversations, is asked as the
follow-up (read whole) and, paired in alternating order, cold by a newcomer; turns 4-8 also once without saved
states (the history re-read). Prints a row per turn: medians of time to first fragment, their paired ratio (target
<= 1.3), first token, decode time per token (the long history's own cost) and the tokens evaluated.

    .venv/bin/python bench/bench_conversation.py [--threads N] [--conversations N] [--kv-mb MB] [--long]
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
from meshbot.core.domain import ChatTurn, Context, Inbound
from meshbot.core.policy import Accept, Kind
from meshbot.core.prompting import build_generation
from meshbot.models.llama import load_model
from meshbot.service.answering import AnswerStream
from meshbot.service.memory import ConversationMemory
from meshbot.service.queueing import Query
from meshbot.storage.memory import MemoryTable
from meshbot.storage.store import Store

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


def ask(
    model, cfg, question: str, history: list[ChatTurn], *, whole: bool, asker: str, follow_up=None
) -> tuple[Timing, AnswerStream]:
    """Time to the first fragment of one answer, on the engine thread; `whole` reads every fragment sent."""
    budget, fragments = cfg.mesh.max_fragment_bytes, cfg.mesh.max_fragments
    request = build_generation(question, cfg, budget, fragments, history)
    # As the worker asks: the conversation names whose saved state this is (one kept per conversation).
    # and, from memory, the history its next prompt will carry (the backend settles the state to it).
    request = dataclasses.replace(request, seed=SEED, conversation=asker, next_history=follow_up)
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
    parser.add_argument("--long", action="store_true", help="8 detailed questions per conversation, past the bound")
    args = parser.parse_args()
    if args.long:
        return long_main(args)
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


# ---------------------------------------------------------------- --long: 8 turns of capped answers

LONG = [
    (
        "Tell me about camping near a lake in autumn, in detail.",
        "What should I cook there, in detail?",
        "How do I keep food away from animals? Explain in detail.",
        "What if it rains all day? Give details.",
        "How cold does it get at night, and how do I stay warm? In detail.",
        "What sleeping bag should I bring? Explain.",
        "How do I pick a good tent spot? In detail.",
        "What should I do before leaving the site? In detail.",
    ),
    (
        "Explain in detail how LoRa radios work.",
        "How far can they reach, in detail?",
        "How does the terrain change that? Explain in detail.",
        "What antenna should I use? Give details.",
        "How high should I mount it? Explain in detail.",
        "How do I protect it from lightning? In detail.",
        "What cable should I use? Explain in detail.",
        "How do I test the whole setup? In detail.",
    ),
    (
        "Tell me in detail how to plan a long hike.",
        "What should I pack, in detail?",
        "How much water do I need? Explain in detail.",
        "How do I find water on the way? In detail.",
        "How do I treat blisters? Explain in detail.",
        "What if the weather turns bad? In detail.",
        "How do I navigate without a phone? Explain in detail.",
        "What should I tell people before I go? In detail.",
    ),
    (
        "Explain in detail how a solar power setup for a radio works.",
        "How big a panel do I need? In detail.",
        "What battery should I use? Explain in detail.",
        "How do I size the charge controller? In detail.",
        "What happens in winter? Explain in detail.",
        "How do I protect it from the weather? In detail.",
        "How do I monitor it remotely? Explain in detail.",
        "What maintenance does it need? In detail.",
    ),
    (
        "Tell me in detail how to start a vegetable garden.",
        "Which vegetables are easiest? In detail.",
        "How do I prepare the soil? Explain in detail.",
        "How often should I water? In detail.",
        "How do I deal with pests? Explain in detail.",
        "When should I harvest? In detail.",
        "How do I store the harvest? Explain in detail.",
        "What should I do in autumn? In detail.",
    ),
]
REPORTED_TURNS = range(4, 9)


@dataclasses.dataclass
class Turn:
    """One conversation's n-th turn, three ways."""

    cold: Timing
    follow: Timing
    reread: Timing | None
    history: int  # exchanges in the follow-up's prompt
    prompt_tokens: int
    evaluated: int  # prompt tokens llama.cpp decoded for the follow-up (its own count)
    shifted_out: int  # tokens removed from the conversation's state, before or after this answer
    answer_tokens: int
    decode_tok_s: float  # the whole follow-up's decode speed


def long_query(text: str, sender: int, packet_id: int) -> Query:
    msg = Inbound(sender, 1, packet_id, "TEXT_MESSAGE_APP", text, len(text.encode()), is_dm=True)
    return Query(msg, Accept(Kind.ASK, text, sender, 0, True), time.monotonic(), query_id=packet_id)


def long_turn(model, cfg, memory: ConversationMemory, conv: int, turn: int) -> Turn:
    """One follow-up (read whole, remembered) and the same question cold, in alternating order; re-read at 4+."""
    text = LONG[conv][turn - 1]
    query = long_query(text, 0x10000 + conv, 1000 * conv + turn)
    context = memory.gather(query, Context())
    history = list(context.history)
    timings: dict[str, Timing] = {}
    for kind in ("cold", "follow") if (conv + turn) % 2 == 0 else ("follow", "cold"):
        if kind == "cold":  # asked by a newcomer: a conversation of its own
            timings[kind], _ = ask(model, cfg, text, [], whole=False, asker=f"newcomer{conv}-{turn}")
        else:
            timings[kind], answer = ask(
                model, cfg, text, history, whole=True, asker=query.conversation_name, follow_up=context.follow_up
            )
    stats = answer.stats
    memory.answered(query, text, answer.text)
    reread = None
    if turn in REPORTED_TURNS:
        cache, model.kv_cache = model.kv_cache, None  # the saved states out of reach: the history is re-read
        model.on_engine(lambda llm: llm.reset())
        reread, _ = ask(model, cfg, text, history, whole=False, asker="reread")
        model.kv_cache = cache
    return Turn(
        timings["cold"],
        timings["follow"],
        reread,
        len(history) // 2,
        stats.prompt_tokens,
        int(stats.extra.get("prompt_evaluated", -1)),
        # Before this answer (from its saved state) or after it (the state settled for the next prompt).
        int(stats.extra.get("kv_shifted_out", 0) + stats.extra.get("kv_settled_out", 0)),
        stats.completion_tokens,
        stats.extra.get("tokens_per_s", 0.0),
    )


def long_main(args: argparse.Namespace) -> int:
    """The --long run: every conversation's 8 turns, round-robin, then a row per turn."""
    convs = range(min(args.conversations, len(LONG)))
    cfg = load_config(environ={})
    model = load_model(ModelConfig(threads=args.threads, seed=SEED, kv_cache_mb=args.kv_mb))
    memory = ConversationMemory(MemoryTable(Store(":memory:")), cfg, model.count_tokens)
    started = time.monotonic()
    turns: dict[int, list[Turn]] = {n: [] for n in range(1, 9)}
    long_header(model.name, args.threads, len(convs), cfg.memory.max_history_tokens)
    for turn in range(1, 9):
        for conv in convs:
            turns[turn].append(long_turn(model, cfg, memory, conv, turn))
        print(long_row(turn, turns[turn]), flush=True)  # row by row: a long run shows its progress
        for n, row in enumerate(turns[turn]):
            print(f"  conversation {n + 1}: {row.follow.first_fragment_s / row.cold.first_fragment_s:.2f}", flush=True)
    long_summary(turns)
    print(f"\n{machine()}; {time.monotonic() - started:.0f} s")
    model.close()
    return 0


def long_row(turn: int, rows: list[Turn]) -> str:
    """One turn's medians as a table row."""
    med = statistics.median
    cold, follow = med(r.cold.first_fragment_s for r in rows), med(r.follow.first_fragment_s for r in rows)
    ratio = med(r.follow.first_fragment_s / r.cold.first_fragment_s for r in rows)
    rereads = [r.reread.first_fragment_s for r in rows if r.reread is not None]
    reread = f"{med(rereads):.3f} ({med(rereads) / cold:.1f}x cold)" if rereads else "-"
    return (
        f"| {turn} | {med(r.history for r in rows):.0f} | {med(r.prompt_tokens for r in rows):.0f} | "
        f"{med(r.evaluated for r in rows):.0f} | {med(r.shifted_out for r in rows):.0f} | {cold:.3f} | "
        f"{follow:.3f} | {ratio:.2f} | {med(r.cold.first_token_s for r in rows):.3f} / "
        f"{med(r.follow.first_token_s for r in rows):.3f} | {1000 * med(r.cold.per_token_s for r in rows):.1f} / "
        f"{1000 * med(r.follow.per_token_s for r in rows):.1f} | {med(r.answer_tokens for r in rows):.0f}, "
        f"{med(r.decode_tok_s for r in rows):.1f} | {reread} |"
    )


def long_header(name: str, threads: int, n: int, bound: int) -> None:
    """The --long table's title and header."""
    print(
        f"model: {name}, {threads} threads; {n} conversations of 8 detailed questions; seed {SEED}; "
        f"memory.max_history_tokens {bound}; medians over the conversations; times in s\n"
    )
    print(
        "| turn | exchanges in prompt | prompt tokens | evaluated | shifted out | cold 1st fragment | "
        "follow-up 1st fragment | ratio (paired) | first token cold / follow-up | "
        "decode ms/token to 1st fragment cold / follow-up | whole answer tokens, tok/s | re-read history |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)


def long_summary(turns: dict[int, list[Turn]]) -> None:
    """Turns 4-8 against the target."""
    med = statistics.median
    late = [r.follow.first_fragment_s / r.cold.first_fragment_s for t in REPORTED_TURNS for r in turns[t]]
    worst = max(med(r.follow.first_fragment_s / r.cold.first_fragment_s for r in turns[t]) for t in REPORTED_TURNS)
    verdict = "ok" if worst <= 1.3 else "OVER TARGET"
    print(
        f"\nturns 4-8: worst per-turn median ratio {worst:.2f} (target <= 1.3: {verdict}); "
        f"all {len(late)} pairs: median {med(late):.2f}, max {max(late):.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
