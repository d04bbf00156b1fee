"""Run a question set through the daemon's own answer pipeline and measure what each answer costs on air.

The same parts as the daemon: the knowledge source's `notes_for` (operator's notes and reference) and
`Answerer.stream` (the path, the prompt, the fact check, tidy, the leak filter, fragments as they fill).
Only the radio is missing: air time is computed for each fragment on the chosen modem preset, as the
sender's pacer would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from meshbot.app.evaluation.questions import DECLINED, Question, kept_language
from meshbot.core import limits
from meshbot.core.airtime import ModemPreset, time_on_air_s
from meshbot.core.config import Config
from meshbot.core.domain import ChatTurn, Note
from meshbot.core.fragmenter import strip_numbering
from meshbot.core.leaks import leak_kinds
from meshbot.core.prompting import budget_words, reply_budget_bytes
from meshbot.service.answering import Answerer, Asked, fragment_budget
from meshbot.service.power import EnergyMeter

# Fixed so that two configurations are compared on the same draws.
DEFAULT_SEED = 42


@dataclass
class Result:
    """One question's answer and its figures."""

    id: str
    category: str
    question: str
    lang: str
    answer: str  # what went on air (the fragments' text, without numbering)
    correct: bool
    leak: bool  # prompt framing or the budget figure went on air (kinds in `leaks`)
    language_kept: bool
    nbytes: int
    fragments: int
    air_s: float
    ttff_s: float | None  # question to first fragment, prompt processing included
    tokens: int
    tokens_per_s: float | None
    notes: list[str] = field(default_factory=list)  # titles of the notes given
    path: str = "open"  # grounded | extractive | declined | open
    dangerous: bool = False  # a rejected (dangerous or plainly wrong) pattern matched
    invented: bool = False  # a local question answered with something that is neither right nor "I don't know"
    leaks: list[str] = field(default_factory=list)  # leak kinds on air (core.leaks), "budget-figure"
    filtered: list[str] = field(default_factory=list)  # leak kinds the filter kept off the air
    model_text: str = ""  # the model's own answer when an extractive one went instead
    energy_j: float | None = None  # the daemon's energy per answer (service.power.EnergyMeter)
    energy_method: str | None = None  # "rapl" or "cpu-estimate"

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
    """Bytes per fragment: a DM reply's, as `meshbot ask` uses."""
    return fragment_budget(cfg, dm=True)


NotesFor = Callable[[str, Sequence[ChatTurn]], tuple[Note, ...]]


def answer_one(
    question: Question,
    cfg: Config,
    answerer: Answerer,
    modem: ModemPreset,
    notes_for: NotesFor | None,
    seed: int = DEFAULT_SEED,
    meter: EnergyMeter | None = None,
) -> Result:
    """Ask one question the way the daemon would and score the answer."""
    # Without operator notes nobody can know the example notes' facts: the right answer is "I don't know".
    local = question.category.startswith("local") or question.needs_notes
    if question.needs_notes and not cfg.knowledge.active:
        question = question.without_notes()
    size, count = eval_budget(cfg), cfg.mesh.max_fragments
    notes = notes_for(question.question, question.history) if notes_for is not None else None
    stream = answerer.stream(Asked(question.question, question.history, notes=notes, seed=seed), size, count)
    # Measured as the daemon's worker measures an answer: around the generation, the notes lookup left out.
    mark = meter.begin() if meter is not None else None
    started = time.monotonic()
    ttff: float | None = None
    for _ in stream:
        if ttff is None:
            ttff = time.monotonic() - started
    elapsed = time.monotonic() - started
    joules, how = meter.end(mark) if meter is not None and mark is not None else (None, None)
    on_air = " ".join(strip_numbering(frag.text, cfg.mesh.ai_tag) for frag in stream.fragments)
    stats = stream.stats
    rate = stats.extra.get("tokens_per_s") or (stats.completion_tokens / elapsed if elapsed > 0 else None)
    leaks = leak_kinds(on_air, question.question)
    if leaks_budget(stream.text, reply_budget_bytes(size, count)):
        leaks.append("budget-figure")
    correct = question.is_correct(on_air)
    return Result(
        id=question.id,
        category=question.category,
        question=question.question,
        lang=question.lang,
        answer=on_air,
        correct=correct,
        leak=bool(leaks),
        language_kept=kept_language(question, on_air),
        nbytes=stream.nbytes,
        fragments=len(stream.fragments),
        air_s=sum(fragment_airtime(frag.text, modem) for frag in stream.fragments),
        ttff_s=ttff,
        tokens=stats.completion_tokens,
        tokens_per_s=rate,
        notes=[note.title for note in notes or ()],
        path=stream.path,
        dangerous=question.is_dangerous(on_air),
        invented=local and not correct and stream.path != "declined" and not DECLINED.search(on_air),
        leaks=leaks,
        filtered=list(stream.leaks.found),
        model_text=stream.model_text,
        energy_j=joules,
        energy_method=how,
    )


def run_questions(
    questions: Sequence[Question],
    cfg: Config,
    answerer: Answerer,
    modem: ModemPreset,
    notes_for: NotesFor | None,
    progress: Callable[[int, Question], None] = lambda done, q: None,
    seed: int = DEFAULT_SEED,
    meter: EnergyMeter | None = None,
) -> list[Result]:
    """Every question in order; `progress` is told before each one; `meter` measures each answer's energy."""
    results = []
    for done, question in enumerate(questions):
        progress(done, question)
        results.append(answer_one(question, cfg, answerer, modem, notes_for, seed, meter))
    progress(len(questions), questions[-1] if questions else None)  # type: ignore[arg-type]
    return results
