"""The saved-state LRU (pure) and, with the real bundled model, that a follow-up reuses its conversation's state."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import random
import threading
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from meshbot.core.config import Config
from meshbot.core.domain import ChatTurn, GenerationStats, Note
from meshbot.core.prompting import build_generation
from meshbot.models import prompt_cache
from meshbot.models.prompt_cache import PrefixCache, SpillDir, common_prefix

tokens = st.lists(st.integers(0, 5), min_size=1, max_size=12)


@given(st.lists(st.tuples(tokens, st.integers(0, 60)), max_size=20), st.integers(0, 200), tokens)
def test_the_cache_never_holds_more_than_its_capacity_and_finds_the_longest_prefix(entries, capacity, probe) -> None:
    cache = PrefixCache(capacity)
    for key, size in entries:
        cache.put(key, b"x" * size)
        assert cache.nbytes <= capacity
    best = max((common_prefix(k, probe) for k in cache._entries), default=0)
    found = cache.best(probe)
    assert (found[1] if found else 0) == best


def test_a_state_pushed_out_of_ram_comes_back_from_disk_whole(tmp_path: Path) -> None:
    cache = PrefixCache(250, SpillDir(10_000, str(tmp_path)))
    cache.put([1, 2, 3], b"a" * 100, "alice")
    cache.put([1, 5, 6], b"b" * 100, "bob")
    cache.put([1, 7, 8], b"c" * 100, "carol")  # alice's state leaves RAM for the disk
    assert len(cache) == 2 and cache.spill is not None and len(cache.spill) == 1
    found = cache.best([1, 2, 3, 4])
    assert found is not None and bytes(found[0].data) == b"a" * 100 and found[1] == 3  # read back, byte for byte
    assert found[0].conversation == "alice" and [1, 2, 3] in [list(k) for k in cache._entries]
    assert len(cache.spill) == 1  # bob's went out to make room: the disk holds whatever RAM cannot


def test_the_disk_tier_keeps_its_bound_one_state_per_conversation_and_is_removed_at_close(tmp_path: Path) -> None:
    spill = SpillDir(250, str(tmp_path))
    cache = PrefixCache(100, spill)
    for turn in range(1, 6):
        for who in ("alice", "bob", "carol"):
            cache.put([hash(who) % 97, *range(turn)], who[0].encode() * 100, who)
            assert spill.nbytes <= 250
    files = list(spill.path.glob("*.kv"))
    assert len(files) == len(spill) <= 2  # the older turns of a conversation were dropped, not kept
    cache.close()
    assert not spill.path.exists()


def test_a_start_removes_the_states_a_killed_process_left_and_keeps_a_living_ones(tmp_path: Path) -> None:
    dead = tmp_path / "meshbot-kv-999999999-x"  # no such process
    dead.mkdir()
    (dead / "1.kv").write_bytes(b"old")
    living = tmp_path / f"meshbot-kv-{os.getppid()}-y"
    living.mkdir()
    spill = SpillDir(1000, str(tmp_path))
    assert not dead.exists() and living.exists() and spill.path.exists()
    spill.close()


def test_a_newer_state_of_a_conversation_replaces_the_one_it_extends() -> None:
    cache = PrefixCache(10_000)
    cache.put([1, 2, 3], b"a" * 100)  # conversation A, turn 1
    cache.put([1, 9, 9], b"b" * 100)  # conversation B
    cache.put([1, 2, 3, 4, 5], b"c" * 100)  # conversation A, turn 2
    assert len(cache) == 2
    found = cache.best([1, 2, 3, 4, 5, 6])
    assert found is not None and found[0].data == b"c" * 100 and found[1] == 5
    assert cache.best([7]) is None  # nothing shared: a miss


def test_a_conversations_next_state_replaces_its_last_even_when_the_tokens_diverge() -> None:
    # The stored answer re-tokenizes differently from the tokens sampled: [1, 2, 3] becomes [1, 2, 8, ...].
    # Without the conversation's name both would stay, and stale states would push other askers out.
    cache = PrefixCache(10_000)
    cache.put([1, 2, 3], b"a" * 100, conversation="!0a0a0a0a/dm")
    cache.put([1, 9, 9], b"b" * 100, conversation="!0b0b0b0b/dm")
    cache.put([1, 2, 8, 4], b"c" * 100, conversation="!0a0a0a0a/dm")
    assert len(cache) == 2
    found = cache.best([1, 2, 3, 7])
    assert found is not None and found[0].data == b"c" * 100 and found[1] == 2


def test_the_least_recently_used_state_goes_first() -> None:
    cache = PrefixCache(250)
    cache.put([1], b"a" * 100)
    cache.put([2], b"b" * 100)
    assert cache.best([1, 5]) is not None  # [1] is used again
    cache.put([3], b"c" * 100)  # over capacity: [2] goes
    assert cache.best([2]) is None
    assert cache.best([1]) is not None and cache.best([3]) is not None
    assert cache.nbytes <= 250


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def written_state(size: int):  # type: ignore[no-untyped-def]
    """A state as the backend makes it: `pages` of the state's size, every byte written (by llama.cpp there)."""
    data = prompt_cache.pages(size)
    ctypes.memset(ctypes.addressof(ctypes.c_char.from_buffer(data)), 7, size)
    return data


def test_states_that_come_and_go_all_day_leave_the_process_near_the_states_it_holds(tmp_path: Path) -> None:
    # 5-24 MB states of changing sizes through RAM and disk, on a thread as on the engine's: held on malloc's heap,
    # the holes old states left kept the process ~2x above the 64 MB it holds (and growing); here it stays there.
    cache = PrefixCache(64_000_000, SpillDir(64_000_000, str(tmp_path)))
    rnd, before = random.Random(3), rss_mb()

    def churn() -> None:
        for turn in range(160):
            cache.put([turn], written_state(rnd.randint(5_000_000, 24_000_000)), f"asker-{turn % 40}")
            if turn % 3 == 0:
                cache.best([rnd.randrange(turn + 1)])  # read back from the disk when it went there

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    held = cache.nbytes / 1e6
    assert 40 < held <= 64
    assert rss_mb() - before < held + 20, f"RSS grew {rss_mb() - before:.0f} MB holding {held:.0f} MB of states"
    cache.close()


def ask(
    model, question: str, history: list[ChatTurn], notes: list[Note] | None = None, who: str | None = None
) -> tuple[str, GenerationStats]:
    cfg = Config()
    request = build_generation(question, cfg, cfg.mesh.max_fragment_bytes, 1, history, notes=notes)
    stats = GenerationStats()
    text = "".join(model.stream(dataclasses.replace(request, seed=5, conversation=who), stats)).strip()
    return text, stats


def test_a_follow_up_reuses_its_conversations_state_after_another_conversation(bundled_model) -> None:
    first, first_stats = ask(bundled_model, "What is LoRa?", [])
    ask(bundled_model, "How do I boil an egg?", [])  # someone else's question in between
    history = [ChatTurn("user", "What is LoRa?"), ChatTurn("assistant", first)]
    answer, follow_up = ask(bundled_model, "How far can it reach?", history)
    _, cold = ask(bundled_model, "How far can it reach?", [])
    bundled_model.kv_cache.clear()
    bundled_model.on_engine(lambda llm: llm.reset())
    from_scratch, _ = ask(bundled_model, "How far can it reach?", history)
    # The same seed gives the same answer with or without the saved state: a crashed follow-up regenerates
    # the text whose first fragments were already delivered.
    assert answer == from_scratch
    assert follow_up.extra["kv_restored"] == 1.0
    # The whole first prompt and its answer came from the saved state: only the new question is evaluated.
    assert follow_up.extra["cached_tokens"] > first_stats.prompt_tokens
    evaluated_follow_up = follow_up.prompt_tokens - follow_up.extra["cached_tokens"]
    evaluated_cold = cold.prompt_tokens - cold.extra["cached_tokens"]
    # A follow-up costs about what a fresh question does: its question, the previous answer's closing template
    # tokens and the few last answer tokens that tidying re-tokenises; not its history (17 vs 11 of 150+ seen).
    assert evaluated_follow_up <= evaluated_cold + 8
    assert evaluated_follow_up < follow_up.prompt_tokens / 4


REPEATER = Note("club.md", "The club repeater stands on Hill Road, on the water tower, 40 m up. Marta looks after it.")


def test_a_follow_up_to_a_question_asked_with_notes_reuses_the_state_past_that_question(bundled_model) -> None:
    # Memory keeps the question without the notes it was asked with: the state kept for the follow-up holds that.
    first, _ = ask(bundled_model, "Where is the repeater?", [], notes=[REPEATER], who="alice")
    ask(bundled_model, "How do I boil an egg?", [], notes=[], who="bob")  # someone else's question in between
    history = [ChatTurn("user", "Where is the repeater?"), ChatTurn("assistant", first)]
    _, follow_up = ask(bundled_model, "Who looks after it?", history, notes=[REPEATER], who="alice")
    _, cold = ask(bundled_model, "Who looks after it?", [], notes=[REPEATER], who="carol")
    assert follow_up.extra["kv_restored"] == 1.0
    evaluated_follow_up = follow_up.prompt_tokens - follow_up.extra["cached_tokens"]
    evaluated_cold = cold.prompt_tokens - cold.extra["cached_tokens"]
    # Its own notes and question, as a cold question evaluates them; not the first question and answer again.
    assert evaluated_follow_up <= evaluated_cold + 8
