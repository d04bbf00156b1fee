"""`meshbot ask`: one question through the model, no radio, showing exactly what would go on air."""

from __future__ import annotations

import logging
from typing import TextIO

from meshbot.core.config import Config
from meshbot.core.domain import GenerationStats, Model
from meshbot.core.fragmenter import Fragment
from meshbot.models import make_model
from meshbot.models.base import ModelError
from meshbot.service.answering import Answerer, Asked, fragment_budget
from meshbot.service.knowledge import knowledge_now

log = logging.getLogger(__name__)


def ask_budget(cfg: Config) -> int:
    """Bytes per fragment for `ask`: a DM reply's, the tighter of the two real ceilings."""
    return fragment_budget(cfg, dm=True)


# Shown in place of a line break inside a fragment, so each fragment stays on one console line.
NEWLINE_MARK = "\u23ce"


def _show(out: TextIO, fragments: list[Fragment]) -> int:
    for frag in fragments:
        shown = frag.text.replace("\n", NEWLINE_MARK)
        out.write(f"[{frag.index}] {frag.nbytes:>3} B  {shown}\n")
    return len(fragments)


def _summary(stats: GenerationStats, count: int, remainder: str, capped: bool) -> str:
    ttft = f"{stats.first_token_s:.2f} s" if stats.first_token_s is not None else "n/a"
    rate = stats.extra.get("tokens_per_s")
    if rate is None and stats.total_s > 0:
        rate = stats.completion_tokens / stats.total_s
    parts = [
        f"{stats.prompt_tokens} prompt + {stats.completion_tokens} tokens",
        f"first token {ttft}",
        f"{rate:.1f} tokens/s" if rate else "tokens/s n/a",
        f"{count} fragment(s)",
        f"{len(remainder.encode('utf-8'))} B left for \"more\"" if capped else "0 B left over",
    ]
    if stats.truncated_input:
        parts.append(f"input cut by {int(stats.extra.get('cut_tokens', 0))} tokens")
    return "-- " + ", ".join(parts) + "\n"


def run_ask(cfg: Config, question: str, out: TextIO, model: Model | None = None) -> int:
    """`meshbot ask`: run the model with no radio, print the exact fragments that would go on air with byte counts."""
    if model is None:
        try:
            model = make_model(cfg.model)
        except ModelError as exc:
            out.write(f"error: {exc}\n")
            return 2
    budget = ask_budget(cfg)
    source = knowledge_now(cfg.knowledge, cfg.answers)
    notes = source.notes_for(question) if source is not None else None
    if source is not None:
        source.close()
    answerer = Answerer(cfg, model)
    answer = answerer.stream(Asked(question, notes=notes), budget, cfg.mesh.max_fragments)
    for note in notes or ():
        out.write(f"-- note: {note.title}\n")
    # Read the whole answer, as the daemon does: what does not fit is kept for "more".
    try:
        count = sum(_show(out, [frag]) for frag in answer)
    except ModelError as exc:  # a model server that is away or refuses: say what to fix, no traceback
        out.write(f"error: {exc}\n")
        return 2
    out.write(f"-- {answerer.mode} mode, answered {answer.path}\n")
    out.write(_summary(answer.stats, count, answer.remainder, answer.capped))
    if count == 0:
        log.warning("the model gave no answer to %r", question)
        return 1
    return 0
