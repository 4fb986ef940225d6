"""The Python API the README shows: ingest, search and get_processing_stats, on both backends."""

from __future__ import annotations

from pathlib import Path

from docmill import Config, get_processing_stats, ingest, search
from docmill.search import query_embedder
from tests.corpus import write_good_corpus


def test_ingest_then_search_answers_each_question(tmp_path: Path, backend_url: str) -> None:
    questions = write_good_corpus(tmp_path / "docs")
    config = Config(content_sources=[{"name": "docs", "path": str(tmp_path / "docs")}])
    summary = ingest(config, db=backend_url)
    assert summary.exit_code == 0 and summary.processed == len(questions)

    firsts = {relative: search(question, config, db=backend_url, k=3) for relative, question in questions.items()}
    misses = [r for r, hits in firsts.items() if not hits or not hits[0].uri.endswith(r)]
    assert len(misses) <= 1, misses
    relative, question = next(iter(questions.items()))
    again = search(question, config, db=backend_url, k=3)
    assert [(h.chunk_id, h.score) for h in again] == [(h.chunk_id, h.score) for h in firsts[relative]]
    # The model is loaded once per process, not once per question.
    assert query_embedder(config.embedding) is query_embedder(config.embedding)

    stats = get_processing_stats(config, db=backend_url)
    assert stats.counts["done"] == len(questions) and stats.chunks >= len(questions)
