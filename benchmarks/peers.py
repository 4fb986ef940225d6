"""docmill next to LlamaIndex's IngestionPipeline: same corpus, same model, same run.

    pip install -e '.[bench]'          # llama-index-core, fastembed (never needed by the tests)
    python benchmarks/peers.py [--documents 200] [--output FILE]

LlamaIndex: SimpleDirectoryReader → IngestionPipeline(SentenceSplitter(200 tokens, 32 overlap),
an embedding) with an in-memory SimpleDocumentStore (so its re-run skips unchanged documents).
The embedding is the SAME all-MiniLM-L6-v2 int8 ONNX model docmill uses, through a small
LlamaIndex ``BaseEmbedding`` that calls docmill's local ONNX embedder: fastembed cannot download
its model here, and the packaged model ships only ``tokenizer.json``, not the other tokenizer
files fastembed's ``specific_model_path`` loader needs. Both sides therefore run identical ONNX
inference with the same threads; the difference is the pipeline around it.
docmill: ``docmill ingest --json`` on a fresh SQLite store, then again with nothing changed.
Prints JSON with both docs/s and the ratios, first run and no-change re-run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The repository root replaces this folder on sys.path: benchmarks/queue.py would shadow the stdlib queue.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from llama_index.core import SimpleDirectoryReader
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.storage.docstore import SimpleDocumentStore
from pydantic import PrivateAttr

from docmill.benchmark import run_ingest, write_corpus
from docmill.config import Config, EmbeddingConfig
from docmill.embedders.local_onnx import LocalOnnxEmbedder


class DocmillOnnxEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 (int8 ONNX) for LlamaIndex, through docmill's local embedder."""

    _model: LocalOnnxEmbedder = PrivateAttr()

    def __init__(self, threads: int, **kwargs: Any) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2", embed_batch_size=8, **kwargs)
        self._model = LocalOnnxEmbedder(EmbeddingConfig(), threads)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._model.embed_query(query).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._model.embed([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._model.embed(texts).tolist()


def llamaindex_runs(folder: Path, threads: int) -> dict[str, Any]:
    """First run and no-change re-run through LlamaIndex's IngestionPipeline (docstore dedup)."""
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=200, chunk_overlap=32), DocmillOnnxEmbedding(threads)],
        docstore=SimpleDocumentStore())
    out: dict[str, Any] = {}
    for label in ("first", "rerun"):
        start = time.perf_counter()
        documents = SimpleDirectoryReader(str(folder), recursive=True, filename_as_id=True).load_data()
        nodes = pipeline.run(documents=documents)
        seconds = time.perf_counter() - start
        out[label] = {"seconds": round(seconds, 3), "documents": len(documents), "nodes_embedded": len(nodes),
                      "docs_per_sec": round(len(documents) / seconds, 2)}
    return out


def docmill_runs(folder: Path, store: Path, documents: int) -> dict[str, Any]:
    """First run and no-change re-run through ``docmill ingest`` (one worker, the default config)."""
    out: dict[str, Any] = {}
    for label in ("first", "rerun"):
        summary = run_ingest(Config(), folder, store, 1)
        out[label] = {"seconds": summary["seconds"], "documents": summary["documents"],
                      "chunks_embedded": summary["embedded_chunks"],
                      "docs_per_sec": round(documents / summary["seconds"], 2)}
    return out


def main() -> None:
    """Run both pipelines on one corpus and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="docmill-peers-") as tmp:
        folder = write_corpus(Path(tmp) / "corpus", args.documents)
        docmill = docmill_runs(folder, Path(tmp) / "store.db", args.documents)
        llama = llamaindex_runs(folder, threads)
    result = {
        "benchmark": "peers", "documents": args.documents, "model": "all-MiniLM-L6-v2 int8 ONNX, both sides",
        "docmill": docmill, "llamaindex_ingestion_pipeline": llama,
        "ratio_first_run": round(docmill["first"]["docs_per_sec"] / llama["first"]["docs_per_sec"], 2),
        "ratio_rerun": round(docmill["rerun"]["docs_per_sec"] / llama["rerun"]["docs_per_sec"], 2),
    }
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
