"""Turn a mesh query into a model request that fits the radio budget.

Pure: no model library here. The numbers answer one question: how much may the model
write so that its reply fits in the fragments a mesh conversation can bear?
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import regex

from meshbot.core.config import Config, PersonaConfig
from meshbot.core.domain import Asker, ChatTurn, Generation, Note

# UTF-8 bytes per token we plan for. Measured with SmolLM2's tokenizer: English 4.6,
# German 2.9, Russian 2.2-2.4, Chinese 1.5. We size for the worst of these so a
# non-English answer is not cut mid-sentence by the token limit; the fragmenter, not the
# token limit, is what keeps a reply within its byte budget.
BYTES_PER_TOKEN_PLANNED = 1.5
# Tokens on top of the estimate: sentence-closing words, a stray leading space.
TOKEN_SLACK = 8
# Average English word plus its space, used to tell the model a word count it can follow.
BYTES_PER_WORD = 6

# A short mesh sentence (about fifteen words) in bytes: the reply's length is told in sentences.
BYTES_PER_SENTENCE = 180
# Spelled out so the prompt carries no figure the model could echo back.
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

ROLES = ("system", "user", "assistant")
# A node's name is whatever its owner typed: keep letters, digits, marks, symbols (emoji) and a few joiners,
# at most this many characters, so it can carry a name but never a sentence of instructions.
NAME_MAX_CHARS = 12
_NAME_DROP = regex.compile(r"[^\p{L}\p{M}\p{N}\p{So}\p{Sk} _.\-]+")


def clean_name(raw: str | None, max_chars: int = NAME_MAX_CHARS) -> str | None:
    """A node name safe to show the model: no controls or punctuation, one line, at most NAME_MAX_CHARS."""
    if not raw:
        return None
    name = " ".join(_NAME_DROP.sub(" ", raw).split())[:max_chars].strip()
    return name or None


def asker_line(asker: Asker) -> str:
    """One bounded line telling the model who asks: a cleaned name, and how many hops away."""
    name = clean_name(asker.short_name)
    parts = [f'The person asking is the node "{name}"' if name else "The person asking is a node on the mesh"]
    if asker.hops is not None:
        hops = max(0, min(asker.hops, 7))
        parts.append("in direct radio range" if hops == 0 else f"{hops} hop{'s' if hops != 1 else ''} away")
    return ", ".join(parts) + "."


# No labels around the notes or the question ("Local notes:", "Question:"): a small model copies a label it
# has seen into its answer ("Question: when does the net end?"). The notes come first, a blank line, then
# the question as the asker wrote it; the persona says what text before a question is for.
NOTES_SEPARATOR = "\n\n"


def numbering_room(max_fragments: int) -> int:
    """Bytes a fragment's number prefix can take, e.g. ``"12/+ "`` or ``"3/3 "``."""
    if max_fragments <= 1:
        return 0
    digits = len(str(max_fragments))
    return 2 * digits + 2  # "k/n " with both numbers at their widest


def reply_budget_bytes(max_fragment_bytes: int, max_fragments: int) -> int:
    """The byte budget the model is told: fragments times the room each leaves for text."""
    if max_fragment_bytes <= 0 or max_fragments <= 0:
        raise ValueError("fragment size and count must be positive")
    body = max_fragment_bytes - numbering_room(max_fragments)
    if body <= 0:
        raise ValueError(f"{max_fragment_bytes}-byte fragments leave no room after numbering")
    return body * max_fragments


def max_tokens_for(budget_bytes: int, cap: int) -> int:
    """Tokens the model may generate for a reply of `budget_bytes`, never above `cap`."""
    if cap < 1:
        raise ValueError("cap must be at least 1")
    wanted = math.ceil(max(budget_bytes, 0) / BYTES_PER_TOKEN_PLANNED) + TOKEN_SLACK
    return max(1, min(cap, wanted))


def budget_words(budget_bytes: int) -> int:
    """A word count a small model can aim at for a byte budget."""
    return max(1, budget_bytes // BYTES_PER_WORD)


def budget_sentences(budget_bytes: int) -> str:
    """The reply length in words, no digits: "one short sentence", "three short sentences"."""
    count = max(1, min(len(_NUMBER_WORDS), budget_bytes // BYTES_PER_SENTENCE))
    return f"{_NUMBER_WORDS[count - 1]} short sentence{'' if count == 1 else 's'}"


def system_prompt(cfg: PersonaConfig, budget_bytes: int) -> str:
    """The configured system prompt with {name}, {budget_sentences}, {budget_bytes} and {budget_words} filled in."""
    values = {
        "name": cfg.bot_name,
        "budget_sentences": budget_sentences(budget_bytes),
        "budget_bytes": str(budget_bytes),
        "budget_words": str(budget_words(budget_bytes)),
    }
    # Plain replacement rather than str.format: an operator's prompt may contain other
    # braces (JSON examples, emoticons) that format() would choke on.
    text = cfg.system_prompt
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def build_generation(
    query: str,
    cfg: Config,
    max_fragment_bytes: int,
    max_fragments: int,
    history: Sequence[ChatTurn] = (),
    *,
    asker: Asker | None = None,
    notes: Sequence[Note] | None = None,
    mesh: str | None = None,
) -> Generation:
    """The chat for one query: our system prompt (and who asks), earlier turns, then the question (with notes).

    `notes` None or empty: the question goes alone (the persona forbids inventing local facts).
    """
    budget = reply_budget_bytes(max_fragment_bytes, max_fragments)
    system = system_prompt(cfg.persona, budget)
    if mesh:
        system = f"{system}\n{cfg.persona.mesh_rule}"
    if asker is not None and (asker.short_name or asker.hops is not None):
        system = f"{system}\n{asker_line(asker)}"
    turns = [ChatTurn("system", system)]
    for turn in history:
        if turn.role not in ROLES:
            raise ValueError(f"unknown chat role {turn.role!r}")
        # Only one system prompt: ours, which carries the current byte budget.
        if turn.role != "system":
            turns.append(turn)
    turns.append(ChatTurn("user", with_mesh(with_notes(query.strip(), notes), mesh)))
    max_tokens = max_tokens_for(budget, cfg.model.max_tokens_cap)
    # Memory keeps the question without its notes or mesh facts (they are looked up afresh for every question).
    plain = notes is None and not mesh
    return Generation(tuple(turns), max_tokens, remembered=None if plain else query.strip())


def notes_block(notes: Sequence[Note]) -> str:
    """The notes as the model sees them: each passage's text, blank lines between; "" for none."""
    # The text only: a small model copies a bracketed title into its answer; `!src` has the titles.
    return NOTES_SEPARATOR.join(note.text.strip() for note in notes)


def with_notes(question: str, notes: Sequence[Note] | None) -> str:
    """The user turn: the notes, then the question; the question alone when there are none."""
    block = notes_block(notes or ())
    # Next to the question rather than in the system prompt: a small model uses what is near.
    return f"{block}{NOTES_SEPARATOR}{question}" if block else question


def with_mesh(user_turn: str, mesh: str | None) -> str:
    """The mesh facts block (service/mesh_context.py) before the rest of the user turn; the turn alone without."""
    return f"{mesh}{NOTES_SEPARATOR}{user_turn}" if mesh else user_turn
