"""End-to-end ingest throughput next to the raw embedder on the same chunks.

    python benchmarks/ingest.py --documents 200 [--folder DIR] [--workers 1]

Prints JSON: docs/s, chunks/s, each stage's share of worker time, the raw embedder's chunks/s on
exactly the chunks the pipeline embedded, pipeline efficiency, and the unchanged re-run time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.corpus import write_corpus
from docmill import Config, ingest
from docmill.chunking import Chunker
from docmill.embedders import create_embedder
from docmill.parsers import parse


def raw_embedder_rate(config: Config, folder: Path, threads: int) -> tuple[int, float]:
    """Chunks/s of the bare embedder on the corpus's chunks, same batch size, nothing else running."""
    embedder = create_embedder(config.embedding, threads=threads)
    chunker = Chunker(config.chunking, embedder.tokenizer(), embedder.max_tokens)
    texts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            texts += [c.embed_text for c in chunker.chunk(parse(path.read_bytes(), path.name))]
        except Exception:
            continue
    texts = sorted(dict.fromkeys(texts), key=len)  # the pipeline batches by length the same way
    batch = config.embedding.batch_size
    embedder.embed(texts[:batch])  # warm-up, as the pipeline's first batch also pays it
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.embed(texts[i:i + batch])
    return len(texts), len(texts) / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--folder", type=Path, help="ingest this folder instead of a generated corpus")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or write_corpus(Path(tmp) / "corpus", args.documents)
        config = Config(storage={"path": str(Path(tmp) / "bench.db")})
        if args.batch_size:
            config.embedding.batch_size = args.batch_size
        first = ingest(config, [str(folder)], workers=args.workers)
        rerun = ingest(config, [str(folder)], workers=args.workers)
        threads = config.embedding.threads or max(1, (os.cpu_count() or 1) // args.workers)
        raw_chunks, raw_rate = raw_embedder_rate(config, folder, threads)

    busy = sum(first.stage_seconds.values()) or 1.0
    e2e_rate = first.embedded_chunks / first.seconds if first.seconds else 0.0
    print(json.dumps({
        "benchmark": "ingest",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "documents": first.documents, "workers": args.workers, "batch_size": config.embedding.batch_size,
        "chunks": first.chunks, "embedded_chunks": first.embedded_chunks, "seconds": first.seconds,
        "docs_per_sec": round(first.processed / first.seconds, 2),
        "chunks_per_sec": round(e2e_rate, 2),
        "stage_share": {k: round(v / busy, 4) for k, v in first.stage_seconds.items()},
        "stage_seconds": first.stage_seconds,
        "raw_embedder_chunks": raw_chunks,
        "raw_embedder_chunks_per_sec": round(raw_rate, 2),
        "pipeline_efficiency": round(e2e_rate / raw_rate, 3) if raw_rate else None,
        "rerun_unchanged_seconds": rerun.seconds, "rerun_embedded_chunks": rerun.embedded_chunks,
        "rerun_fraction_of_first": round(rerun.seconds / first.seconds, 4) if first.seconds else None,
    }, indent=2))


if __name__ == "__main__":
    main()
