"""Run a question set through the daemon's own answer pipeline and measure what each answer costs on air.

The same parts as the daemon: `build_generation` (persona, history, notes), the knowledge source's
`notes_for`, and `AnswerStream` (tidy, then fragments as they fill). Only the radio is missing: air
time is computed for each fragment on the chosen modem preset, as the sender's pacer would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from meshbot.app.evaluation.questions import Question, kept_language
from meshbot.core import limits
from meshbot.core.airtime import ModemPreset, time_on_air_s
from meshbot.core.config import Config
from meshbot.core.domain import ChatTurn, Generation, Model, Note
from meshbot.core.fragmenter import strip_numbering
from meshbot.core.prompting import budget_words, build_generation, reply_budget_bytes
from meshbot.service.answering import AnswerStream

# Fixed so that two configurations are compared on the same draws.
DEFAULT_SEED = 42


@dataclass
class Result:
    """One question's answer and its figures."""

    id: str
    category: str
    question: str
    answer: str  # what went on air (the fragments' text, without numbering)
    correct: bool
    leak: bool  # the answer names the byte or word budget the prompt is built from
    language_kept: bool
    nbytes: int
    fragments: int
    air_s: float
    ttff_s: float | None  # question to first fragment, prompt processing included
    tokens: int
    tokens_per_s: float | None
    notes: list[str] = field(default_factory=list)  # titles of the notes given

    def as_dict(self) -> dict[str, object]:
        """For the JSON report."""
        return asdict(self)


def leaks_budget(answer: str, budget_bytes: int) -> bool:
    """True when the answer contains the budget figure (bytes or words) as a number."""
    figures = {budget_bytes, budget_words(budget_bytes)}
    return any(re.search(rf"(?<!\d){n}(?!\d)", answer) for n in figures)


def fragment_airtime(text: str, modem: ModemPreset) -> float:
    """Seconds on air of one answer fragment (a reply, so with reply_id)."""
    frame = limits.text_frame_len(len(text.encode("utf-8")), reply_id=True)
    return time_on_air_s(frame, modem)


def eval_budget(cfg: Config) -> int:
    """Bytes per fragment: the configured size under the DM ceiling, as `meshbot ask` uses."""
    return min(cfg.mesh.max_fragment_bytes, limits.MAX_TEXT_BYTES_DM_WITH_REPLY_ID)


NotesFor = Callable[[str, Sequence[ChatTurn]], tuple[Note, ...]]


def answer_one(
    question: Question,
    cfg: Config,
    model: Model,
    modem: ModemPreset,
    notes_for: NotesFor | None,
    seed: int = DEFAULT_SEED,
) -> Result:
    """Ask one question the way the daemon would and score the answer."""
    size, count = eval_budget(cfg), cfg.mesh.max_fragments
    notes = notes_for(question.question, question.history) if notes_for is not None else None
    request = build_generation(question.question, cfg, size, count, question.history, notes=notes)
    request = Generation(request.turns, request.max_tokens, seed)
    stream = AnswerStream(model, request, size, count)
    started = time.monotonic()
    ttff: float | None = None
    for _ in stream:
        if ttff is None:
            ttff = time.monotonic() - started
    elapsed = time.monotonic() - started
    on_air = " ".join(strip_numbering(frag.text) for frag in stream.fragments)
    stats = stream.stats
    rate = stats.extra.get("tokens_per_s") or (stats.completion_tokens / elapsed if elapsed > 0 else None)
    return Result(
        id=question.id,
        category=question.category,
        question=question.question,
        answer=on_air,
        correct=question.is_correct(on_air),
        leak=leaks_budget(stream.text, reply_budget_bytes(size, count)),
        language_kept=kept_language(question, on_air),
        nbytes=stream.nbytes,
        fragments=len(stream.fragments),
        air_s=sum(fragment_airtime(frag.text, modem) for frag in stream.fragments),
        ttff_s=ttff,
        tokens=stats.completion_tokens,
        tokens_per_s=rate,
        notes=[note.title for note in notes or ()],
    )


def run_questions(
    questions: Sequence[Question],
    cfg: Config,
    model: Model,
    modem: ModemPreset,
    notes_for: NotesFor | None,
    progress: Callable[[int, Question], None] = lambda done, q: None,
    seed: int = DEFAULT_SEED,
) -> list[Result]:
    """Every question in order; `progress` is told before each one."""
    results = []
    for done, question in enumerate(questions):
        progress(done, question)
        results.append(answer_one(question, cfg, model, modem, notes_for, seed))
    progress(len(questions), questions[-1] if questions else None)  # type: ignore[arg-type]
    return results
