"""Knowledge index at scale: index time and size for ~50 MB of generated notes, and retrieval latency.

    python -m bench.bench_knowledge [--mb 50] [--keep DIR]

Generated Markdown (headings, paragraphs, a Zipf-distributed vocabulary of made-up words plus real
mesh words) in many files; indexed into a SQLite file as the daemon does; then every benchmark and
eval question is looked up (search plus the token-budget cut, what each question pays). Prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.prompts import PROMPTS
from meshbot.app.evaluation.questions import load_questions
from meshbot.core.config import KnowledgeConfig
from meshbot.service.knowledge import KnowledgeSource
from meshbot.storage.knowledge import KnowledgeIndex

FILE_BYTES = 100_000
REAL_WORDS = (
    "repeater net channel water spring solar hill antenna battery node relay hop preset emergency shelter".split()
)


def vocabulary(rng: random.Random, size: int = 30_000) -> list[str]:
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"]
    words = {"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(size * 2)}
    return sorted(words)[:size] + REAL_WORDS


def write_corpus(folder: Path, megabytes: int, seed: int = 7) -> int:
    """Write note files totalling about `megabytes` MB; returns the byte count."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]
    rng.shuffle(weights)  # the real mesh words land somewhere in the Zipf curve
    cum = list(itertools.accumulate(weights))  # once: choices() would sum 30,000 weights per call
    total, n = 0, 0
    while total < megabytes * 1_000_000:
        parts = [f"# Notes {n}\n"]
        size = 0
        while size < FILE_BYTES:
            parts.append(f"\n## {' '.join(rng.choices(words, cum_weights=cum, k=3)).title()}\n")
            for _ in range(rng.randint(1, 4)):
                sentence_words = rng.choices(words, cum_weights=cum, k=rng.randint(40, 120))
                paragraph = " ".join(sentence_words).capitalize() + ".\n"
                parts.append("\n" + paragraph)
                size += len(paragraph)
        text = "".join(parts)
        (folder / f"notes-{n:04d}.md").write_text(text, encoding="utf-8")
        total += len(text.encode("utf-8"))
        n += 1
    return total


def main() -> None:
    """Build, index, query, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--keep", type=Path, help="write the corpus and index here instead of a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        notes = root / "notes"
        notes.mkdir(parents=True, exist_ok=True)
        corpus = write_corpus(notes, args.mb)
        print(f"wrote {corpus / 1e6:.1f} MB of notes; indexing", flush=True)
        db = root / "knowledge.db"
        cfg = KnowledgeConfig(paths=(str(notes),))
        index = KnowledgeIndex(str(db), cfg.passage_bytes)
        started, cpu = time.perf_counter(), time.process_time()
        report = index.sync([notes])
        index_s, index_cpu = time.perf_counter() - started, time.process_time() - cpu
        started = time.perf_counter()
        again = index.sync([notes])
        rescan_s = time.perf_counter() - started
        source = KnowledgeSource(index, cfg)
        questions = PROMPTS + [q.question for q in load_questions()]
        latencies = []
        for question in questions:
            t0 = time.perf_counter()
            source.notes_for(question)
            latencies.append((time.perf_counter() - t0) * 1000)
        files, passages = index.counts()
        index.close()
        size = sum(p.stat().st_size for p in root.glob("knowledge.db*"))
        latencies.sort()
        rows = [
            ("notes", f"{corpus / 1e6:.1f} MB in {files} files, {passages} passages"),
            (
                "index time (first pass)",
                f"{index_s:.0f} s wall, {index_cpu:.0f} s CPU ({corpus / 1e6 / index_cpu:.2f} MB per CPU-second), {report.indexed} files",
            ),
            ("re-check, nothing changed", f"{rescan_s * 1000:.0f} ms"),
            ("index size", f"{size / 1e6:.1f} MB ({size / corpus:.2f}x the notes)"),
            ("questions", str(len(latencies))),
            ("retrieval p50", f"{statistics.median(latencies):.2f} ms"),
            ("retrieval p95", f"{latencies[int(len(latencies) * 0.95) - 1]:.2f} ms"),
            ("retrieval max", f"{latencies[-1]:.2f} ms"),
        ]
        print("| knowledge index | measured |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
        print(f"unchanged files on re-check: {again.unchanged}")


if __name__ == "__main__":
    main()
