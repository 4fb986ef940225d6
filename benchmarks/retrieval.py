"""Retrieval quality on real documents: hit@1, hit@k and MRR of hybrid, vector and text search.

    python benchmarks/retrieval.py --folder DIR --questions FILE [--k 5] [--config YAML] [--store PATH]
                                   [--output FILE]

FILE holds one ``question|fragment`` per line, where fragment is part of the path of the file that
answers the question (``#`` lines are comments). The folder is ingested with the default config into
a SQLite store (``--store``: kept and reused, so a second run only searches); ``--config`` takes the
embedding and chunking settings from a YAML file instead (its sources and storage are replaced). Prints JSON.
``benchmarks/questions/system_docs.txt`` matches documentation Debian and rustup install; its header
says how to assemble that folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

# The repository root replaces this folder on sys.path: benchmarks/queue.py would shadow the stdlib queue.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks.report import emit
from docmill import Config, ingest, search
from docmill.config import SourceConfig

MODES = ("hybrid", "vector", "text")


def read_questions(path: Path) -> list[tuple[str, str]]:
    """(question, path fragment) pairs of a questions file."""
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            question, _, fragment = line.rpartition("|")
            pairs.append((question.strip(), fragment.strip()))
    return pairs


def score(config: Config, db: str, questions: list[tuple[str, str]], k: int, mode: str) -> dict[str, Any]:
    """hit@1, hit@k and mean reciprocal rank (over the top k) of one search mode."""
    ranks: list[int | None] = []
    misses = []
    for question, fragment in questions:
        uris = [h.uri for h in search(question, config, db=db, k=k, mode=mode)]  # type: ignore[arg-type]
        rank = next((i for i, uri in enumerate(uris, 1) if fragment in uri), None)
        ranks.append(rank)
        if rank != 1:
            misses.append({"question": question, "expected": fragment, "rank": rank,
                           "got": [Path(u).name for u in uris[:3]]})
    n = len(questions)
    return {"hit_at_1": round(sum(r == 1 for r in ranks) / n, 3),
            f"hit_at_{k}": round(sum(r is not None for r in ranks) / n, 3),
            "mrr": round(sum(1 / r for r in ranks if r) / n, 3), "not_first": misses}


def main() -> None:
    """Ingest the folder (unless the store has it), ask every question in every mode, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--questions", type=Path, required=True)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--config", type=Path, help="YAML config whose embedding and chunking settings to use")
    parser.add_argument("--store", type=Path, help="SQLite file to keep (default: a temporary one)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    questions = read_questions(args.questions)
    if not questions:
        parser.error(f"{args.questions} holds no questions")
    with tempfile.TemporaryDirectory(prefix="docmill-retrieval-") as tmp:
        store = args.store or Path(tmp) / "store.db"
        db = f"sqlite:///{store.resolve()}"
        base = Config.load(args.config) if args.config else Config()
        config = base.model_copy(update={"content_sources": [SourceConfig(name="corpus", path=str(args.folder))]})
        summary = ingest(config, db=db)
        result = {"benchmark": "retrieval", "folder": str(args.folder), "documents": summary.counts,
                  "chunks": summary.chunks, "questions": len(questions), "k": args.k,
                  "model": config.embedding.model, "quantize": config.embedding.quantize,
                  "modes": {mode: score(config, db, questions, args.k, mode) for mode in MODES}}
    emit(result, args.output)


if __name__ == "__main__":
    main()
