"""One `meshbot eval` session: load each configuration's model and notes once, run, report."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TextIO

from meshbot.app.evaluation.questions import Question
from meshbot.app.evaluation.report import table, totals, write_json
from meshbot.app.evaluation.runner import NotesFor, Result, run_questions
from meshbot.core.airtime import ModemPreset
from meshbot.core.config import Config, ModelConfig, PowerConfig
from meshbot.core.domain import Model
from meshbot.models import make_model
from meshbot.models.base import ModelError
from meshbot.service.answering import Answerer
from meshbot.service.knowledge import knowledge_now
from meshbot.service.power import EnergyMeter


def select(questions: Sequence[Question], categories: Sequence[str] | None, limit: int | None) -> list[Question]:
    """The questions of the chosen categories, at most `limit` of each."""
    chosen: list[Question] = []
    seen: dict[str, int] = {}
    for q in questions:
        if categories and q.category not in categories:
            continue
        seen[q.category] = seen.get(q.category, 0) + 1
        if limit is None or seen[q.category] <= limit:
            chosen.append(q)
    return chosen


def evaluate(
    configs: Sequence[tuple[str, Config]],
    questions: Sequence[Question],
    args: argparse.Namespace,
    modem: ModemPreset,
    out: TextIO,
    err: TextIO,
    load_model: Callable[[ModelConfig], Model] = make_model,
    energy: Callable[[PowerConfig], EnergyMeter] = EnergyMeter,
) -> int:
    """Run every configuration over the questions; print the table; 1 if prompt framing or a budget figure leaked."""
    from meshbot.app.evaluation import Progress

    chosen = select(questions, args.category, args.limit)
    if not chosen:
        err.write("meshbot eval: no questions selected\n")
        return 2
    models: dict[str, Model] = {}  # configurations that share a model share one loaded copy
    runs: list[tuple[str, Sequence[Result]]] = []
    try:
        for label, cfg in configs:
            key = cfg.model.model_dump_json()
            if key not in models:
                models[key] = load_model(cfg.model)
            source = knowledge_now(cfg.knowledge, cfg.answers)
            notes_for: NotesFor | None = source.notes_for if source else None
            answerer = Answerer(cfg, models[key])
            progress = Progress(len(chosen), f"{label} ({answerer.mode})", err)
            meter = energy(cfg.power)  # the daemon's meter: RAPL where readable, else CPU-seconds × watts_per_core
            runs.append((label, run_questions(chosen, cfg, answerer, modem, notes_for, progress, args.seed, meter)))
            if source is not None:
                source.close()
    except ModelError as exc:
        err.write(f"meshbot eval: {exc}\n")
        return 2
    finally:
        for model in models.values():
            model.close()
    out.write(table(runs, modem.name))
    out.write(totals(runs))
    leaks = sum(r.leak for _, results in runs for r in results)
    if args.json_path:
        meta = {"preset": modem.name, "seed": args.seed, "questions": len(chosen)}
        write_json(args.json_path, runs, meta)
    return 1 if leaks else 0
