"""Fitting a chat into the model's context window. Pure: token counting is passed in.

The reply needs `max_tokens` of the window, so the prompt gets the rest. Old history goes
first, then the user's text is cut from its end; the system prompt always stays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from meshbot.core.domain import ChatTurn

# Re-tokenising a cut text can shift its length by a token or two; this many tries suffice.
FIT_ATTEMPTS = 4


class ContextTooSmall(ValueError):
    """The system prompt alone does not leave room for a reply."""


@dataclass(frozen=True)
class Fit:
    """A chat cut to fit the context window."""

    turns: tuple[ChatTurn, ...]
    prompt_tokens: int
    max_tokens: int
    cut_tokens: int  # tokens of user input and history left out


def _cut_user_text(
    turns: list[ChatTurn],
    total: int,
    limit: int,
    count_prompt: Callable[[Sequence[ChatTurn]], int],
    count_text: Callable[[str], int],
    head: Callable[[str, int], str],
) -> tuple[int, int]:
    """Shorten the last turn to its first tokens until the prompt fits; (total, cut)."""
    text = turns[-1].content
    original = count_text(text)
    keep = original - (total - limit)
    for _ in range(FIT_ATTEMPTS):
        turns[-1] = replace(turns[-1], content=head(text, max(keep, 0)))
        total = count_prompt(turns)
        if total <= limit or keep <= 0:
            break
        keep -= total - limit
    return total, original - count_text(turns[-1].content)


def fit_turns(
    turns: Sequence[ChatTurn],
    max_tokens: int,
    n_ctx: int,
    count_prompt: Callable[[Sequence[ChatTurn]], int],
    count_text: Callable[[str], int],
    head: Callable[[str, int], str],
) -> Fit:
    """Make prompt + reply fit `n_ctx`: drop old history, then cut the user's text from the end."""
    limit = n_ctx - max_tokens
    total = count_prompt(turns)
    if total <= limit:
        return Fit(tuple(turns), total, max_tokens, 0)
    work, cut = list(turns), 0
    first = next((i for i, t in enumerate(work) if t.role != "system"), len(work))
    # Older turns matter less than the question itself, so they go first.
    while total > limit and first < len(work) - 1:
        cut += count_text(work.pop(first).content)
        total = count_prompt(work)
    if total > limit and work and work[-1].role == "user":
        total, cut_now = _cut_user_text(work, total, limit, count_prompt, count_text, head)
        cut += cut_now
    if total > limit:
        # The system prompt alone crowds the context: give the reply what is left.
        max_tokens = n_ctx - total
        if max_tokens < 1:
            raise ContextTooSmall(f"the system prompt needs {total} tokens, more than n_ctx={n_ctx}")
    return Fit(tuple(work), total, max_tokens, cut)
