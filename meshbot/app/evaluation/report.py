"""Figures per category from eval results, as a table for people and as JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from meshbot.app.evaluation.runner import Result
from meshbot.service.answering import PATHS


@dataclass(frozen=True)
class Summary:
    """One category's (or the whole set's) figures for one configuration."""

    n: int
    correct: int
    leaks: int
    language_kept: int
    mean_bytes: float
    mean_fragments: float
    air_s_per_answer: float
    ttff_s: float | None
    tokens_per_s: float | None
    correct_per_air_min: float  # the figure that matters on a mesh
    dangerous: int = 0  # answers matching a rejected pattern
    invented: int = 0  # local questions answered neither right nor "I don't know"
    paths: dict[str, int] = field(default_factory=dict)  # grounded / extractive / declined / open
    leak_kinds: dict[str, int] = field(default_factory=dict)  # on air, by kind
    filtered: int = 0  # leaks the filter kept off the air
    energy_j: float | None = None  # every answer's energy, right or wrong (None: not measured)
    joules_per_correct: float | None = None  # energy_j over the correct answers: what a right answer costs
    energy_method: str | None = None  # "rapl", "cpu-estimate", or both joined by "+"

    def as_dict(self) -> dict[str, object]:
        """For the JSON report."""
        return dict(self.__dict__)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return mean(present) if present else None


def summarise(results: Sequence[Result]) -> Summary:
    """The figures of a group of answers."""
    if not results:
        return Summary(0, 0, 0, 0, 0.0, 0.0, 0.0, None, None, 0.0)
    correct = sum(r.correct for r in results)
    paths = Counter(r.path for r in results)
    air = sum(r.air_s for r in results)
    measured = [r for r in results if r.energy_j is not None]
    joules = sum(r.energy_j or 0.0 for r in measured) if measured else None
    return Summary(
        n=len(results),
        correct=correct,
        leaks=sum(r.leak for r in results),
        language_kept=sum(r.language_kept for r in results),
        mean_bytes=mean(r.nbytes for r in results),
        mean_fragments=mean(r.fragments for r in results),
        air_s_per_answer=air / len(results),
        ttff_s=_mean([r.ttff_s for r in results]),
        tokens_per_s=_mean([r.tokens_per_s for r in results]),
        correct_per_air_min=correct / (air / 60) if air > 0 else 0.0,
        dangerous=sum(r.dangerous for r in results),
        invented=sum(r.invented for r in results),
        paths={path: paths[path] for path in PATHS},
        leak_kinds=dict(Counter(kind for r in results for kind in r.leaks)),
        filtered=sum(len(r.filtered) for r in results),
        energy_j=joules,
        joules_per_correct=joules / correct if joules is not None and correct else None,
        energy_method="+".join(sorted({r.energy_method for r in measured if r.energy_method})) or None,
    )


def by_category(results: Sequence[Result]) -> dict[str, Summary]:
    """Figures per category in first-seen order, then "all"."""
    order = list(dict.fromkeys(r.category for r in results))
    table = {cat: summarise([r for r in results if r.category == cat]) for cat in order}
    table["all"] = summarise(results)
    return table


COLUMNS: tuple[tuple[str, Callable[[Summary], str]], ...] = (
    ("correct", lambda s: f"{s.correct}/{s.n}"),
    ("%", lambda s: f"{100 * s.correct / s.n:.0f}" if s.n else "-"),
    ("danger", lambda s: str(s.dangerous)),
    ("invented", lambda s: str(s.invented)),
    ("g/e/d/o", lambda s: "/".join(str(s.paths.get(p, 0)) for p in PATHS)),
    ("bytes", lambda s: f"{s.mean_bytes:.0f}"),
    ("frags", lambda s: f"{s.mean_fragments:.1f}"),
    ("air-s", lambda s: f"{s.air_s_per_answer:.1f}"),
    ("ttff-s", lambda s: "n/a" if s.ttff_s is None else f"{s.ttff_s:.1f}"),
    ("tok/s", lambda s: "n/a" if s.tokens_per_s is None else f"{s.tokens_per_s:.0f}"),
    ("ok/air-min", lambda s: f"{s.correct_per_air_min:.2f}"),
    ("J/ok", lambda s: "n/a" if s.joules_per_correct is None else f"{s.joules_per_correct:.1f}"),
    ("lang", lambda s: f"{s.language_kept}/{s.n}"),
    ("leaks", lambda s: str(s.leaks)),
)


def table(runs: Sequence[tuple[str, Sequence[Result]]], preset: str) -> str:
    """A Markdown table: one row per category, each cell "A | B" when configurations are compared."""
    summaries = [(label, by_category(results)) for label, results in runs]
    categories = list(dict.fromkeys(cat for _, s in summaries for cat in s))
    sep = " / "
    head = ["category", *[name for name, _ in COLUMNS]]
    lines = [
        f"configurations: {sep.join(label for label, _ in runs)}; air time on {preset}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for cat in categories:
        cells = [sep.join(fmt(s[cat]) if cat in s else "-" for _, s in summaries) for _, fmt in COLUMNS]
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def non_english(results: Sequence[Result]) -> Summary:
    """The figures of the questions asked in another language than English."""
    return summarise([r for r in results if r.lang != "en"])


def totals(runs: Sequence[tuple[str, Sequence[Result]]]) -> str:
    """One line per configuration: non-English share, dangerous, invented, paths, leaks by kind."""
    lines = []
    for label, results in runs:
        s, other = summarise(results), non_english(results)
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.leak_kinds.items())) or "none"
        paths = ", ".join(f"{p} {s.paths.get(p, 0)}" for p in PATHS)
        share = f"{other.correct}/{other.n}" if other.n else "-"
        energy = "" if s.energy_j is None else f"; energy {s.energy_j:.1f} J ({s.energy_method})"
        lines.append(
            f"{label}: non-English right {share}; dangerous {s.dangerous}; invented local facts {s.invented}; "
            f"paths: {paths}; leaks on air: {kinds} ({s.filtered} kept off by the filter){energy}"
        )
    return "\n".join(lines) + "\n"


def write_json(path: Path, runs: Sequence[tuple[str, Sequence[Result]]], meta: dict[str, object]) -> None:
    """Every answer and every summary, per configuration."""
    doc = {
        **meta,
        "configurations": [
            {
                "label": label,
                "summary": {cat: s.as_dict() for cat, s in by_category(results).items()},
                "results": [r.as_dict() for r in results],
            }
            for label, results in runs
        ],
    }
    Path(path).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
