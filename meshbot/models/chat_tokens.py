"""A chat as the llama engine's tokens: the model's own chat template and tokenizer, for fitting and settling.

The prompt is rendered here, not by the engine, so its tokens can be counted before generating; the engine is
given this very formatter as its chat handler, so both agree token for token.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from meshbot.core.domain import ChatTurn, Generation

# Invisible separators: no template writes them, so where they land in a rendered chat is where a message was.
_ANSWER, _QUESTION = "\u2063A\u2063", "\u2063Q\u2063"


def messages(turns: Sequence[ChatTurn]) -> list[dict[str, str]]:
    """The turns as the engine's chat handler takes them."""
    return [{"role": t.role, "content": t.content} for t in turns]


class ChatTokens:
    """Chats rendered by one formatter and tokenized as the engine's chat handler does. Engine thread only."""

    def __init__(self, llm: Any, formatter: Any) -> None:
        self._llm, self._formatter = llm, formatter

    def _render(self, turns: Sequence[ChatTurn]) -> str:
        prompt: str = self._formatter(messages=messages(turns)).prompt
        return prompt

    def _tokens(self, text: str) -> list[int]:
        # Same call as llama-cpp-python's chat handler: the template adds specials itself.
        ids: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return ids

    def prompt(self, turns: Sequence[ChatTurn]) -> list[int]:
        """Tokens of the chat prompt exactly as the engine will see it."""
        return self._tokens(self._render(turns))

    def joint(self) -> list[int]:
        """The template's tokens between an answer's text and the next question's (empty if they do not split)."""
        turns = [ChatTurn("user", "x"), ChatTurn("assistant", _ANSWER), ChatTurn("user", _QUESTION)]
        prompt = self._render(turns)
        start, end = prompt.find(_ANSWER), prompt.find(_QUESTION)
        if start < 0 or end < start:
            return []
        # Should a template's last joint token merge with a question's first word, the engine's prefix match
        # stops before it: that costs the token's evaluation, never a wrong state.
        return self._tokens(prompt[start + len(_ANSWER) : end])

    def through_answer(self, turns: Sequence[ChatTurn], answer: str) -> list[int] | None:
        """What a follow-up's prompt starts with: `turns`, then `answer` as history, then the joint; None if unknown.

        Rendered as the follow-up's own prompt renders that history, up to where its question's text begins, so
        a state holding these tokens is a prefix of that prompt token for token.
        """
        prompt = self._render([*turns, ChatTurn("assistant", answer), ChatTurn("user", _QUESTION)])
        end = prompt.rfind(_QUESTION)  # the last: an answer could hold the marker itself
        return self._tokens(prompt[:end]) if end >= 0 else None

    def follow_up_starts(
        self, turns: Sequence[ChatTurn], request: Generation, written: Sequence[str]
    ) -> list[list[int]]:
        """What the follow-up's prompt may start with, up to its question, this answer as memory keeps it.

        First, with `request.next_history`, the history as memory will bound it: past the bound it has left the
        oldest exchange out. Then this prompt's history with this exchange (`through_answer`).
        """
        question = turns[-1].content if turns and turns[-1].role == "user" else ""
        if request.remembered is not None and request.conversation is not None and question:
            question = request.remembered  # the question without its notes
            turns = (*turns[:-1], ChatTurn("user", question))
        # The text memory keeps (tidied, and whole where the length limit cut the last token's evaluation) seldom
        # tokenizes as sampled: the state holds the follow-up's own tokens instead, so it re-reads none of them.
        kept = request.kept_answer(written) if request.kept_answer is not None else "".join(written).strip()
        starts = []
        if request.next_history is not None and request.conversation is not None:
            following = request.next_history(question, kept)
            if following and following[-1].role == "assistant":
                system = tuple(itertools.takewhile(lambda t: t.role == "system", turns))
                starts.append(self.through_answer((*system, *following[:-1]), following[-1].content))
        starts.append(self.through_answer(turns, kept))
        return [start for start in starts if start is not None]
