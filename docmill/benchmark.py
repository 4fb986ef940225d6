"""``docmill benchmark``: end-to-end ingest throughput, its scaling with workers, and the bare embedder.

Each measured ingest is a real ``docmill ingest --json`` command in its own process on a fresh SQLite
store (so peak RSS is that of a worker, not of this process), then run again with nothing changed.
In the same run the bare embedder embeds exactly the chunks the pipeline embedded, in one call
(the best case: one global length sort), which gives **pipeline efficiency = end-to-end chunks/s ÷
bare embedder chunks/s**. Everything is printed as one JSON object.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from docmill.chunking import Chunker
from docmill.config import Config
from docmill.embedders import create_embedder
from docmill.parsers import parse

_VOCABULARY = """
system data queue worker lease token vector search index chunk document parser
model batch cluster machine network latency throughput memory storage backup retry failure
signal process thread leader election heartbeat claim store commit rollback schema migration
replica shard cache eviction budget limit window metric alert dashboard trace span
log level config
"""
_WORDS = tuple(_VOCABULARY.split())


def _sentence(rng: random.Random, i: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 18))]
    return f"{' '.join(words).capitalize()} {i}."


def write_corpus(root: Path, documents: int, paragraphs: int = 4, seed: int = 7) -> Path:
    """Write ``documents`` Markdown files (about 300 tokens each with 4 paragraphs) under ``root``;
    deterministic, every sentence distinct (so the cache does not flatter the first run)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    counter = 0
    for d in range(documents):
        lines = [f"# Document {d}", ""]
        for p in range(paragraphs):
            lines += [f"## Part {p}", ""]
            sentences = []
            for _ in range(4):
                counter += 1
                sentences.append(_sentence(rng, counter))
            lines += [" ".join(sentences), ""]
        folder = root / f"group_{d // 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"doc_{d:05d}.md").write_text("\n".join(lines))
    return root


def corpus_texts(config: Config, folder: Path) -> list[str]:
    """The distinct chunk texts the pipeline would embed for ``folder`` (unparseable files skipped)."""
    embedder = create_embedder(config.embedding, threads=1)
    chunker = Chunker(config.chunking, embedder.tokenizer(), embedder.max_tokens)
    texts: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            texts += [c.embed_text for c in chunker.chunk(parse(path.read_bytes(), path.name))]
        except Exception:  # a file the pipeline dead-letters has no chunks to embed either
            continue
    return list(dict.fromkeys(texts))


def raw_embedder_rate(config: Config, texts: Sequence[str], threads: int) -> float:
    """Chunks/s of the bare embedder on ``texts`` in one call (it sorts them by length), after a warm-up."""
    embedder = create_embedder(config.embedding, threads=threads)
    embedder.embed(list(texts[: config.embedding.batch_size]))  # the pipeline's first batch pays this too
    start = time.perf_counter()
    embedder.embed(list(texts))
    return len(texts) / (time.perf_counter() - start)


def run_ingest(config: Config, folder: Path, store: Path, workers: int, env: dict[str, str] | None = None,
               ) -> dict[str, Any]:
    """One ``docmill ingest --json`` command on ``folder`` with ``store`` as its SQLite file; its summary."""
    data = config.model_dump(mode="json")
    data["storage"] = {"backend": "sqlite", "path": str(store)}
    data["content_sources"] = [{"name": "bench", "path": str(folder)}]
    cfg_file = store.with_suffix(".yaml")
    cfg_file.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "docmill", "ingest", str(cfg_file), "--json",
                           "--workers", str(workers)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"docmill ingest failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout))


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    seconds = summary["seconds"] or 1e-9
    busy = sum(summary["stage_seconds"].values()) or 1.0
    return {
        "seconds": summary["seconds"], "documents": summary["processed"],
        "docs_per_sec": round(summary["processed"] / seconds, 2),
        "chunks_per_sec": round(summary["embedded_chunks"] / seconds, 2),
        "embedded_chunks": summary["embedded_chunks"], "cache_hits": summary["cache_hits"],
        "embed_requests": summary.get("embed_requests", 0), "dead": summary["dead"],
        "stage_share": {k: round(v / busy, 4) for k, v in summary["stage_seconds"].items()},
        "latency_seconds": summary.get("latency", {}),
        "max_inflight_chunks": summary.get("max_inflight_chunks", 0),
        "peak_rss_mb_per_worker": summary.get("peak_rss_mb", []),
    }


def benchmark(config: Config, *, documents: int = 200, folder: Path | None = None,
              workers: Sequence[int] = (1,), raw: bool = True, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the whole benchmark and return its JSON-able result."""
    with tempfile.TemporaryDirectory(prefix="docmill-bench-") as tmp:
        root = Path(tmp)
        corpus = folder or write_corpus(root / "corpus", documents)
        runs: dict[str, Any] = {}
        for n in workers:
            store = root / f"store-{n}.db"
            first = _figures(run_ingest(config, corpus, store, n, env))
            rerun = run_ingest(config, corpus, store, n, env)
            first["rerun_unchanged"] = {"seconds": rerun["seconds"], "documents_checked": rerun["documents"],
                                        "embedded_chunks": rerun["embedded_chunks"]}
            runs[str(n)] = first
        result: dict[str, Any] = {
            "benchmark": "docmill ingest",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
                       f"{platform.python_version()}",
            "corpus": str(folder) if folder else f"generated, {documents} Markdown documents",
            "provider": config.embedding.provider, "model": config.embedding.model,
            "batch_size": config.embedding.batch_size, "workers": runs,
        }
        if config.embedding.provider == "local":
            result["runtime"] = config.embedding.runtime
            result["precision"] = config.embedding.precision
        base = runs[str(workers[0])]
        result["scaling"] = {n: {"docs_per_sec": r["docs_per_sec"],
                                 "speedup": round(r["docs_per_sec"] / base["docs_per_sec"], 2)
                                 if base["docs_per_sec"] else None,
                                 "efficiency": round(r["docs_per_sec"] / base["docs_per_sec"] / (int(n) / workers[0]),
                                                     2) if base["docs_per_sec"] else None}
                             for n, r in runs.items()}
        if raw:
            texts = corpus_texts(config, corpus)
            threads = config.embedding.threads or max(1, (os.cpu_count() or 1) // workers[0])
            rate = raw_embedder_rate(config, texts, threads)
            result["raw_embedder"] = {"chunks": len(texts), "chunks_per_sec": round(rate, 2)}
            result["pipeline_efficiency"] = round(base["chunks_per_sec"] / rate, 3) if rate else None
        return result


def parse_workers(value: str) -> list[int]:
    """``"1,2,4,8"`` → ``[1, 2, 4, 8]``."""
    counts = [int(v) for v in value.split(",") if v.strip()]
    if not counts or any(n < 1 for n in counts):
        raise ValueError(f"--workers {value!r}: give positive counts such as 1,2,4,8")
    return counts
