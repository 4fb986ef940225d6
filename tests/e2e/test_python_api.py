"""The Python API the README shows: ingest, search and get_processing_stats, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from docmill import Config, get_processing_stats, ingest, search
from docmill.backends import open_backend
from docmill.backends.base import Backend
from docmill.errors import DocmillError, StoreError
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


def test_a_rerun_with_nothing_changed_writes_nothing(tmp_path: Path, backend_url: str) -> None:
    write_good_corpus(tmp_path / "docs")
    config = Config(content_sources=[{"name": "docs", "path": str(tmp_path / "docs")}])
    first = ingest(config, db=backend_url)
    store = open_backend(backend_url, config)
    try:
        before = _footprint(store, first.run_id)
        again = ingest(config, db=backend_url, workers=2)  # no worker process is even started
        assert (again.processed, again.embedded_chunks, again.exit_code) == (0, 0, 0)
        assert again.counts == first.counts and again.chunks == first.chunks
        assert _footprint(store, first.run_id) == before, "nothing to do writes nothing"

        # One touched file: the full path runs (discovery, a worker, finalize) and re-checks it.
        touched = next((tmp_path / "docs").rglob("*.md"))
        touched.write_text(touched.read_text() + "\nOne more line about the lobby piano.\n")
        third = ingest(config, db=backend_url)
        assert (third.changed, third.processed, third.finalized) == (1, 1, True)
        assert _footprint(store, first.run_id) != before
        assert store.get_run(first.run_id).state == "complete"
    finally:
        store.close()


def _footprint(store: Backend, run_id: str) -> tuple[object, ...]:
    """What any write of an ingest would change: the run row, its workers, its documents' history."""
    run = store.get_run(run_id)
    assert run is not None
    documents = store.documents(run_id, None, None)
    return (run.updated_at, run.discovery_gen, run.finalize_count, len(store.worker_rows(run_id)),
            tuple(len(store.events(d.id)) for d in documents))


def test_searches_in_one_process_see_every_ingest_in_between(tmp_path: Path, backend_url: str) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "piano.md").write_text("# Piano\n\nThe lobby piano is tuned every spring by a visiting technician.\n")
    config = Config(content_sources=[{"name": "docs", "path": str(docs)}])
    question = "How often are the beehives on the roof inspected?"
    ingest(config, db=backend_url)
    assert [h.uri.rsplit("/", 1)[-1] for h in search(question, config, db=backend_url, k=3)] == ["piano.md"]
    (docs / "bees.md").write_text("# Bees\n\nThe beehives on the roof are inspected every two weeks in summer.\n")
    ingest(config, db=backend_url)
    assert search(question, config, db=backend_url, k=3)[0].uri.endswith("bees.md")
    (docs / "bees.md").write_text("# Bees\n\nThe bees were moved to the orchard; the roof has none now.\n")
    ingest(config, db=backend_url)
    assert "orchard" in search(question, config, db=backend_url, k=3, mode="vector")[0].text
    (docs / "bees.md").unlink()
    ingest(config, db=backend_url)
    assert [h.uri.rsplit("/", 1)[-1] for h in search(question, config, db=backend_url, k=3)] == ["piano.md"]


def test_reading_a_store_docmill_never_filled_is_a_clear_error(tmp_path: Path, backend_url: str) -> None:
    config = Config()
    reads = (lambda: search("tulips", config, db=backend_url), lambda: get_processing_stats(config, db=backend_url))
    for read in reads:
        with pytest.raises(StoreError, match="no docmill store"):
            read()
    missing = tmp_path / "nowhere" / "store.db"
    with pytest.raises(StoreError, match="no docmill store at"):
        search("tulips", config, db=str(missing))
    assert not missing.parent.exists()  # a read never leaves an empty store behind
    store = open_backend(backend_url)
    try:
        store.init_schema()
    finally:
        store.close()
    with pytest.raises(StoreError, match="holds no run yet"):
        search("tulips", config, db=backend_url)


def test_an_interrupted_run_resumed_lists_its_sources_again(tmp_path: Path, backend_url: str) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\nThe heron count of pond {i} was {i * 7}.\n")
    config = Config(content_sources=[{"name": "docs", "path": str(docs)}])
    first = ingest(config, db=backend_url, limit=2)  # stops with the run still ingesting, as Ctrl-C would
    assert first.counts["pending"] == 4
    (docs / "note5.md").unlink()
    (docs / "otters.md").write_text("# Otters\n\nOtters returned to the river in spring.\n")
    resumed = ingest(config, db=backend_url)
    assert (resumed.new, resumed.removed, resumed.dead) == (1, 1, 0)
    assert resumed.counts["done"] == 6 and resumed.exit_code == 0
    assert search("otters river", config, db=backend_url, k=1)[0].uri.endswith("otters.md")


def test_a_store_filled_by_the_int8_model_is_searched_with_it(tmp_path: Path, backend_url: str) -> None:
    questions = write_good_corpus(tmp_path / "docs")
    config = Config(content_sources=[{"name": "docs", "path": str(tmp_path / "docs")}], embedding={"quantize": True})
    assert ingest(config, db=backend_url).exit_code == 0
    relative, question = next(iter(questions.items()))
    assert search(question, config, db=backend_url, k=3)[0].uri.endswith(relative)
    with pytest.raises(DocmillError, match=r"embedded with local/all-MiniLM-L6-v2 \(it holds local/all-MiniLM-L6-v2 "
                                           r"\(quantize True\)\)"):
        search(question, Config(), db=backend_url)


def test_worker_processes_see_the_callers_environment_each_time(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Worker processes fork from a server that keeps the environment it started with: a variable the
    # caller sets later (here where the local model keeps its folded copy) must still reach them.
    write_good_corpus(tmp_path / "docs")
    config = Config(content_sources=[{"name": "docs", "path": str(tmp_path / "docs")}])
    assert ingest(config, db=f"sqlite:///{tmp_path / 'one.db'}", workers=2).exit_code == 0
    monkeypatch.setenv("DOCMILL_CACHE_DIR", str(tmp_path / "cache"))
    assert ingest(config, db=f"sqlite:///{tmp_path / 'two.db'}", workers=2).exit_code == 0
    assert list((tmp_path / "cache").rglob("*.onnx")), "the workers kept their folded model where they were told"
