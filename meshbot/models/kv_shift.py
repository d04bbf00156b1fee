"""Where a saved state can serve a prompt that left part of it out: the pure half of the KV context shift.

A conversation past `memory.max_history_tokens` drops its oldest exchange: the new prompt holds the system prompt,
then the rest of the history the saved state holds, then the new question. The saved state can serve it once the
dropped block's tokens are removed and the later positions moved down by its length (llama.cpp's `seq_rm` and
`seq_add`, as its own context shift does). Pure: token lists in, a plan out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshbot.models.prompt_cache import common_prefix

# Fewer tokens kept past the dropped block than this: not worth a shift (a chat template's message header alone
# is 3-5 tokens; a shift that keeps only that would tie the state to an unrelated older turn).
MIN_KEPT_TOKENS = 48
# Tokens compared before the whole run is: the dropped block must end where a message of the prompt begins.
_ANCHOR = 4


@dataclass(frozen=True)
class Shift:
    """Keep `head` tokens, drop the next `dropped`, keep the following `kept` (moved down by `dropped`)."""

    head: int
    dropped: int
    kept: int

    @property
    def reused(self) -> int:
        """Prompt tokens the shifted state holds: the head and the kept run."""
        return self.head + self.kept


def find_shift(
    saved: Sequence[int], prompt: Sequence[int], joint: Sequence[int], min_kept: int = MIN_KEPT_TOKENS
) -> Shift | None:
    """The drop of whole exchanges that lets `saved` serve the longest start of `prompt`; None if there is none.

    The head is what both share; the kept run is the longest stretch of `saved` after it that continues `prompt`
    from there. Whole exchanges only: the dropped block ends with `joint` (the template's tokens between an answer
    and the next question) and the kept run holds at least one joint and `min_kept` tokens. A prompt that differs
    otherwise (a tidied answer, a new hop count) is left to the prefix match: its state stays exactly the one a
    fresh evaluation gives. Of equal runs, the shortest drop wins.
    """
    joint = list(joint)
    head = _message_start(saved, common_prefix(saved, prompt), joint)
    if not joint or head >= len(prompt) or head >= len(saved):
        return None
    anchor = list(prompt[head : head + _ANCHOR])
    best: Shift | None = None
    for start in range(head + 1, len(saved) - min_kept + 1):
        if list(saved[start : start + len(anchor)]) != anchor or list(saved[start - len(joint) : start]) != joint:
            continue
        kept = common_prefix(saved[start:], prompt[head:])
        if kept >= min_kept and (best is None or kept > best.kept) and _holds(saved[start : start + kept], joint):
            best = Shift(head, start - head, kept)
    return best


def _message_start(saved: Sequence[int], shared: int, joint: list[int]) -> int:
    """The end of the last joint within `saved[:shared]` (`shared` if none): where the shared message began."""
    # A dropped question and the kept one after it may begin alike ("How ..."): the tokens the prompt shares
    # past the joint then belong to the dropped block, whose end is the kept message's start.
    n = len(joint)
    for end in range(shared, n - 1, -1):
        if n and list(saved[end - n : end]) == joint:
            return end
    return shared


def _holds(run: Sequence[int], joint: list[int]) -> bool:
    n = len(joint)
    return any(list(run[i : i + n]) == joint for i in range(len(run) - n + 1))
