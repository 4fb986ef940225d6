"""Search latency on a large store: vector, text and hybrid, cold (first query) and warm.

    python benchmarks/search.py [--chunks 100000] [--backends sqlite,postgres] [--pg-url URL]

Fills a store with N chunks (real sentences from a small vocabulary, random unit vectors of 384
dimensions) through the normal fenced completion path, then times queries: on one open backend, and
on a backend opened and closed around each query, as every Python API ``search()`` call does.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# The repository root replaces this folder on sys.path: benchmarks/queue.py would shadow the stdlib queue.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks.pg import postgres
from docmill.backends import open_backend
from docmill.backends.base import Backend, DocumentResult
from docmill.config import Config
from docmill.models import Chunk, DocumentRef

RUN = "search-bench"
DIM = 384
CHUNKS_PER_DOC = 50


def _vocabulary(size: int, rng: random.Random) -> list[str]:
    """Pronounceable pseudo-words: a vocabulary as large as a real corpus's."""
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _fill(backend: Backend, chunks: int, seed: int = 3) -> list[str]:
    """Store ``chunks`` chunks; returns the vocabulary, most frequent word first."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(20_000, rng)
    # Zipf-like word frequencies, as in natural text: a few common words, a long tail of rare ones.
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(vocabulary))]
    vec_rng = np.random.default_rng(seed)
    backend.init_schema()
    backend.open_run(RUN, "{}")
    docs = chunks // CHUNKS_PER_DOC
    backend.upsert_documents(RUN, [DocumentRef("bench", f"d{i}", f"/bench/d{i}.md", version="1")
                                   for i in range(docs)], 1)
    while claimed := backend.claim(RUN, "bench", 100, 600, 3):
        for doc in claimed:
            texts = [" ".join(rng.choices(vocabulary, weights, k=120)) for _ in range(CHUNKS_PER_DOC)]
            vectors = vec_rng.standard_normal((CHUNKS_PER_DOC, DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            backend.complete(doc, DocumentResult(
                content_hash=str(doc.id), title=doc.key, mime="text/markdown",
                chunks=[Chunk(i, t, t, char_start=0, char_end=len(t)) for i, t in enumerate(texts)],
                vectors=vectors, text_hashes=[f"{doc.id}-{i}" for i in range(CHUNKS_PER_DOC)], model_id="bench"))
    return vocabulary


def _time(fn: Any, repeats: int) -> dict[str, float]:
    first = time.perf_counter()
    fn()
    cold = time.perf_counter() - first
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t)
    return {"cold_ms": round(cold * 1000, 2), "warm_p50_ms": round(statistics.median(warm) * 1000, 2),
            "warm_max_ms": round(max(warm) * 1000, 2)}


def measure(url: str, chunks: int, repeats: int) -> dict[str, Any]:
    """Fill the store at ``url`` and time each search mode."""
    backend = open_backend(url, Config())
    start = time.perf_counter()
    vocabulary = _fill(backend, chunks)
    fill_seconds = time.perf_counter() - start
    backend.close()
    query = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
    query /= np.linalg.norm(query)
    # A question of four words of middling frequency (ranks 200, 1000, 3000, 8000), as users type.
    question = " ".join(vocabulary[r] for r in (200, 1000, 3000, 8000))
    results: dict[str, Any] = {"chunks": chunks, "question": question, "fill_seconds": round(fill_seconds, 1),
                               "fill_chunks_per_sec": round(chunks / fill_seconds)}
    # A fresh backend per mode, as each `docmill search` command opens one: "cold" includes loading.
    modes = (("vector", lambda b: b.vector_search(query, 10, [RUN])),
             ("text", lambda b: b.text_search(question, 10, [RUN])))
    for mode, fn in modes:
        backend = open_backend(url, Config())
        results[mode] = _time(lambda fn=fn, backend=backend: fn(backend), repeats)
        backend.close()
    # As the Python API's search() does on every call: open the store, query, close it.
    for mode, fn in modes:
        results[f"{mode}_reopened_per_query"] = _time(lambda fn=fn: _on_fresh_backend(url, fn), repeats)
    return results


def _on_fresh_backend(url: str, fn: Any) -> None:
    backend = open_backend(url, Config())
    try:
        fn(backend)
    finally:
        backend.close()


def main() -> None:
    """Run and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-url")
    args = parser.parse_args()
    out: dict[str, Any] = {"benchmark": "search", "dimensions": DIM}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.backends.split(","):
            if kind == "sqlite":
                out[kind] = measure(f"sqlite:///{Path(tmp) / 'search.db'}", args.chunks, args.repeats)
            else:
                with postgres(args.pg_url, Path(tmp)) as url:
                    out[kind] = measure(url, args.chunks, args.repeats)
            print(json.dumps({kind: out[kind]}), file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
