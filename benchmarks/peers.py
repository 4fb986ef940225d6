"""docmill next to LlamaIndex's IngestionPipeline: same corpus, same model, same run.

    pip install -e '.[bench]'          # llama-index-core, llama-index-embeddings-fastembed, fastembed
    python benchmarks/peers.py [--documents 200 [--pdf] | --folder DIR] [--rounds 3]
        [--quantize | --precision bfloat16] [--runtime R] [--output FILE]

LlamaIndex: SimpleDirectoryReader → IngestionPipeline(SentenceSplitter(200 tokens, 32 overlap),
FastEmbedEmbedding) with an in-memory SimpleDocumentStore (so its re-run skips unchanged documents).
fastembed runs the SAME all-MiniLM-L6-v2 int8 ONNX file docmill packages: it cannot download its
own copy here, so the model folder it is given (``specific_model_path``) is assembled from the
packaged ``model.onnx`` and ``tokenizer.json`` plus the two small tokenizer settings files fastembed
also reads (256-token truncation, as docmill). Both sides get all cores for ONNX inference.
docmill: ``docmill ingest --json`` on a fresh SQLite store, then again with nothing changed.
First runs: ``--rounds`` per side, alternating which side goes first, each on a fresh store and a
fresh pipeline; the median is reported (this VM's speed drifts by ±10% within minutes).
Re-runs, like for like: both sides repeat the no-change re-run REPEATS times in one process (LlamaIndex
``load_data`` + ``pipeline.run`` on the pipeline it keeps; docmill's whole ``docmill.ingest(config)``
call, which opens the store through the connection the process kept from its previous call, as
any application calling it again would) and report the median, after WARMUPS untimed re-runs. The
two sides take turns, RERUN_BLOCK re-runs at a time, so both see the VM at the same speed.
``rerun_alternating`` takes turns call by call instead: each re-run then starts on the caches the
other side's just filled, as in an application that does other work between re-runs (docmill's
re-run is a few hundred microseconds of Python over many modules, and slows the most from that).
``rerun_cli`` adds what a new ``docmill ingest`` process reports for the same re-run (its
``seconds``, from the call's start).
``--pdf`` writes the generated documents as PDFs (one page per section; LlamaIndex reads them with
pypdf), the usual pile of documents, where a re-run that re-reads every file costs the most.
Both timings include loading the model. Prints JSON with docs/s, chunks/s and the ratios.
``--quantize`` runs docmill with ``embedding.quantize: true`` (int8 arithmetic; LlamaIndex stays on the
float model, so the two no longer compute the same vectors: a figure for that option, not like for like);
``--runtime openvino --precision bfloat16`` likewise, though its vectors stay within cosine 0.9999 of
float32's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The repository root replaces this folder on sys.path: benchmarks/queue.py would shadow the stdlib queue.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from llama_index.core import SimpleDirectoryReader
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.embeddings.fastembed import FastEmbedEmbedding

from benchmarks.report import emit
from docmill.benchmark import run_ingest, write_corpus
from docmill.config import Config
from docmill.embedders.local_onnx import model_file, tokenizer_file
from docmill.runner import ingest
from tests.corpus import simple_pdf

#: What fastembed reads besides tokenizer.json: all-MiniLM-L6-v2's published tokenizer settings.
TOKENIZER_CONFIG = {"do_lower_case": True, "model_max_length": 256, "pad_token": "[PAD]", "cls_token": "[CLS]",
                    "sep_token": "[SEP]", "unk_token": "[UNK]", "mask_token": "[MASK]",
                    "tokenize_chinese_chars": True, "strip_accents": None}
SPECIAL_TOKENS = {k: TOKENIZER_CONFIG[k] for k in ("pad_token", "cls_token", "sep_token", "unk_token", "mask_token")}
#: No-change re-runs per side; the median is reported (one re-run is a few milliseconds: noise).
REPEATS = 21
#: Untimed re-runs before those, on both sides: the first calls after a first run run cold.
WARMUPS = 3
#: Re-runs per side in a row before the other side's turn (``rerun``; ``rerun_alternating`` takes 1).
RERUN_BLOCK = 7


def fastembed_model_folder(root: Path) -> Path:
    """A folder fastembed's ``specific_model_path`` loads: the packaged model and tokenizer, linked."""
    folder = root / "all-MiniLM-L6-v2-int8"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").symlink_to(model_file())
    (folder / "tokenizer.json").symlink_to(tokenizer_file())
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS))
    return folder


def pdf_corpus(root: Path, documents: int) -> Path:
    """The generated Markdown documents as PDFs, one page per section."""
    folder = root / "pdf"
    folder.mkdir(parents=True)
    for path in sorted(write_corpus(root / "markdown", documents).rglob("*.md")):
        sections = [s.strip() for s in path.read_text().split("\n## ") if s.strip()]
        (folder / f"{path.stem}.pdf").write_bytes(simple_pdf(sections))
    return folder


def llamaindex_first_run(folder: Path, model: Path, threads: int) -> tuple[dict[str, Any], Callable[[], Any]]:
    """One first run through LlamaIndex's IngestionPipeline (docstore dedup): its figures, and a
    callable that re-runs the same pipeline."""
    start = time.perf_counter()
    embedding = FastEmbedEmbedding(model_name="sentence-transformers/all-MiniLM-L6-v2", threads=threads,
                                   specific_model_path=str(model))
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=200, chunk_overlap=32), embedding],
                                 docstore=SimpleDocumentStore())

    def one_run() -> tuple[int, int]:
        documents = SimpleDirectoryReader(str(folder), recursive=True, filename_as_id=True).load_data()
        return len(documents), len(pipeline.run(documents=documents))

    documents, chunks = one_run()
    return figures(time.perf_counter() - start, documents, chunks), one_run


def docmill_cli_run(folder: Path, store: Path, documents: int, config: Config) -> dict[str, Any]:
    """One ``docmill ingest --json`` command on ``store``: a first run on a fresh store, a no-change
    re-run on a filled one."""
    summary = run_ingest(config, folder, store, 1)
    return figures(summary["seconds"], documents, summary["embedded_chunks"])


def compare(folder: Path, root: Path, documents: int, threads: int, rounds: int, config: Config) -> dict[str, Any]:
    """``rounds`` first runs per side, alternating which side goes first, then the no-change re-runs."""
    model = fastembed_model_folder(root)
    firsts: dict[str, list[dict[str, Any]]] = {"docmill": [], "llamaindex": []}
    llama_rerun: Callable[[], Any] | None = None  # the last pipeline's: each holds its vectors
    for r in range(rounds):
        store = root / f"store-{r}.db"
        for side in (("docmill", "llamaindex") if r % 2 == 0 else ("llamaindex", "docmill")):
            if side == "docmill":
                firsts[side].append(docmill_cli_run(folder, store, documents, config))
            else:
                first, llama_rerun = llamaindex_first_run(folder, model, threads)
                firsts[side].append(first)
    assert llama_rerun is not None  # rounds >= 1
    out: dict[str, dict[str, Any]] = {side: {"first": median_figures(runs), "first_seconds_per_round":
                                             [f["seconds"] for f in runs]} for side, runs in firsts.items()}
    out["docmill"]["rerun_cli"] = docmill_cli_run(folder, store, documents, config)  # the last round's store
    config = Config.load(store.with_suffix(".yaml"))  # the file run_ingest wrote
    calls = {"docmill": lambda: ingest(config), "llamaindex": llama_rerun}
    for label, block in (("rerun", RERUN_BLOCK), ("rerun_alternating", 1)):
        reruns = interleaved_medians(calls, block)
        seconds, summary = reruns["docmill"]
        out["docmill"][label] = figures(seconds, documents, summary.embedded_chunks)
        seconds, (documents_read, chunks) = reruns["llamaindex"]
        out["llamaindex"][label] = figures(seconds, documents_read, chunks)
    return out


def median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median seconds (the lower middle one for an even count)."""
    return sorted(runs, key=lambda f: f["seconds"])[(len(runs) - 1) // 2]


def interleaved_medians(calls: dict[str, Callable[[], Any]], block: int) -> dict[str, tuple[float, Any]]:
    """Each call's median wall time over REPEATS calls after WARMUPS untimed ones, and its last
    result. The calls take turns ``block`` calls at a time (the order alternating), so a drift in the
    VM's speed, which can last seconds, falls on both sides alike. ``block=1`` runs each call after
    the other side's: on caches the other side just filled, as an application doing other work would."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, Any] = {}
    for name in names:
        for _ in range(WARMUPS):
            results[name] = calls[name]()
    for turn in range(-(-REPEATS // block)):
        for name in names if turn % 2 == 0 else reversed(names):
            for _ in range(min(block, REPEATS - turn * block)):
                start = time.perf_counter()
                results[name] = calls[name]()
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in names}


def figures(seconds: float, documents: int, chunks: int) -> dict[str, Any]:
    """One run's figures."""
    return {"seconds": round(seconds, 6), "documents": documents, "chunks_embedded": chunks,
            "docs_per_sec": round(documents / seconds, 2), "chunks_per_sec": round(chunks / seconds, 2)}


def main() -> None:
    """Run both pipelines on one corpus and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--pdf", action="store_true", help="generate the corpus as PDFs")
    parser.add_argument("--folder", type=Path, help="compare on this folder instead of a generated corpus")
    parser.add_argument("--rounds", type=int, default=3, help="first runs per side; the median is reported")
    parser.add_argument("--quantize", action="store_true", help="docmill with embedding.quantize (int8)")
    parser.add_argument("--runtime", choices=["onnxruntime", "openvino"], default="onnxruntime",
                        help="docmill's engine for the local model")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="docmill on OpenVINO in bfloat16 (LlamaIndex stays float32)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="docmill-peers-") as tmp:
        if args.folder:
            folder = args.folder
        elif args.pdf:
            folder = pdf_corpus(Path(tmp) / "corpus", args.documents)
        else:
            folder = write_corpus(Path(tmp) / "corpus", args.documents)
        documents = sum(1 for p in folder.rglob("*") if p.is_file())
        config = Config(embedding={"quantize": args.quantize, "runtime": args.runtime,
                                   "precision": args.precision})
        runs = compare(folder, Path(tmp), documents, threads, args.rounds, config)
    docmill, llama = runs["docmill"], runs["llamaindex"]
    result = {
        "benchmark": "peers",
        "corpus": str(args.folder) if args.folder else "generated " + ("PDF" if args.pdf else "Markdown"),
        "documents": documents, "model": "all-MiniLM-L6-v2 int8 ONNX, both sides", "rounds": args.rounds,
        "docmill_quantize": args.quantize, "docmill_runtime": args.runtime,
        "docmill_precision": args.precision,
        "docmill": docmill, "llamaindex_ingestion_pipeline": llama,
        "ratio_first_run": round(llama["first"]["seconds"] / docmill["first"]["seconds"], 2),
        "ratio_rerun": round(llama["rerun"]["seconds"] / docmill["rerun"]["seconds"], 1),
        "ratio_rerun_alternating": round(llama["rerun_alternating"]["seconds"]
                                         / docmill["rerun_alternating"]["seconds"], 1),
        "ratio_rerun_cli": round(llama["rerun"]["seconds"] / docmill["rerun_cli"]["seconds"], 1),
    }
    emit(result, args.output)


if __name__ == "__main__":
    main()
