"""The docmill CLI as a user runs it: a subprocess, a real folder, the real model, a SQLite file."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fpdf import FPDF

from tests.corpus import (
    write_bad_corpus,
    write_good_corpus,
    write_invalid_utf8,
    write_large_file,
    write_zero_byte,
)
from tests.fakes.openai_server import FakeEmbeddingServer

DOCMILL = [sys.executable, "-m", "docmill"]
#: Prefix that runs a command without root's power to read and write any file, so that permission
#: cases are real when the tests run as root.
UNPRIVILEGED = (["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                 "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])
needs_permissions = pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                                       reason="running as root without setpriv: file permissions do not bind")


def run(*args: str, cwd: Path, check_code: int | None = 0, env: dict[str, str] | None = None,
        timeout: float = 300, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``docmill ARGS`` (bound by file permissions with ``unprivileged``) and check its exit code."""
    prefix = UNPRIVILEGED if unprivileged else []
    proc = subprocess.run([*prefix, *DOCMILL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check_code is not None:
        assert proc.returncode == check_code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def ingest_json(workdir: Path, *args: str, code: int = 0) -> dict:
    """``docmill ingest … --json`` parsed."""
    return json.loads(run("ingest", *args, "--json", cwd=workdir, check_code=code).stdout)


def top_uri(workdir: Path, question: str, k: int = 3) -> list[str]:
    """URIs of the top search hits for a question."""
    hits = json.loads(run("search", question, "-k", str(k), "--json", cwd=workdir).stdout)
    return [h["uri"] for h in hits]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict]:
    """A good corpus ingested once for the search tests."""
    workdir = tmp_path_factory.mktemp("work")
    questions = write_good_corpus(workdir / "docs")
    summary = ingest_json(workdir, "docs")
    return workdir, questions, summary


def test_ingest_summary_has_documented_keys(corpus_run: tuple[Path, dict[str, str], dict]) -> None:
    _, questions, summary = corpus_run
    for key in ("run_id", "counts", "chunks", "seconds", "docs_per_sec"):
        assert key in summary
    assert summary["counts"]["done"] == len(questions)
    assert summary["counts"]["dead"] == 0
    assert summary["chunks"] >= len(questions)
    assert summary["finalized"] is True


def test_search_finds_the_file_that_answers(corpus_run: tuple[Path, dict[str, str], dict]) -> None:
    workdir, questions, _ = corpus_run
    misses = []
    for relative, question in questions.items():
        uris = top_uri(workdir, question)
        if not uris or not uris[0].endswith(relative):
            misses.append((question, relative, uris))
    # Hybrid retrieval on 11 distinct topics should place the answering file first almost always.
    assert len(misses) <= 1, misses


def test_search_modes_and_human_output(corpus_run: tuple[Path, dict[str, str], dict]) -> None:
    workdir, _, _ = corpus_run
    for mode in ("vector", "text", "hybrid"):
        hits = json.loads(run("search", "fire alarm assembly point", "--mode", mode, "--json", cwd=workdir).stdout)
        assert hits and hits[0]["uri"].endswith("handbook.pdf"), mode
        assert hits[0]["page"] is not None
    human = run("search", "sourdough starter feeding", cwd=workdir).stdout
    assert "sourdough.md" in human


def test_reingest_unchanged_embeds_nothing(corpus_run: tuple[Path, dict[str, str], dict]) -> None:
    workdir, questions, _ = corpus_run
    again = ingest_json(workdir, "docs")
    assert again["embedded_chunks"] == 0
    assert again["processed"] == 0
    assert again["counts"]["done"] == len(questions)
    human = run("ingest", "docs", cwd=workdir)
    assert "nothing changed since the last ingest" in human.stdout
    assert "0/0 documents" not in human.stderr
    assert "docs/s" not in human.stdout  # no rate for a call that processed nothing


def test_status_and_documents_commands(corpus_run: tuple[Path, dict[str, str], dict]) -> None:
    workdir, questions, summary = corpus_run
    status = json.loads(run("status", "--json", cwd=workdir).stdout)
    assert status["run_id"] == summary["run_id"]
    assert status["counts"]["done"] == len(questions)
    for key in ("active_workers", "queue_depth", "throughput", "avg_processing_time", "failed_count"):
        assert key in status
    docs = json.loads(run("documents", "--json", cwd=workdir).stdout)
    assert {d["state"] for d in docs} == {"done"}
    assert all(d["chunks"] > 0 for d in docs)
    assert "done" in run("status", cwd=workdir).stdout


def test_change_and_delete_are_reflected(tmp_path: Path) -> None:
    write_good_corpus(tmp_path / "docs")
    ingest_json(tmp_path, "docs")
    piano = tmp_path / "docs" / "notes" / "piano.txt"
    piano.write_text("Lobby piano care\n\nThe lobby piano was replaced by a harpsichord that is tuned every "
                     "Friday by the baroque ensemble.\n")
    (tmp_path / "docs" / "data" / "aquarium.csv").unlink()
    summary = ingest_json(tmp_path, "docs")
    assert summary["changed"] == 1
    assert summary["removed"] == 1
    assert summary["processed"] == 1
    assert 0 < summary["embedded_chunks"] <= 2
    hits = json.loads(run("search", "harpsichord tuned by the baroque ensemble", "--json", cwd=tmp_path).stdout)
    assert hits[0]["uri"].endswith("piano.txt") and "harpsichord" in hits[0]["text"]
    every = json.loads(run("search", "neon tetra water temperature", "-k", "20", "--json", cwd=tmp_path).stdout)
    assert not any(h["uri"].endswith("aquarium.csv") for h in every)


def test_touched_file_is_not_reembedded(tmp_path: Path) -> None:
    write_good_corpus(tmp_path / "docs")
    ingest_json(tmp_path, "docs")
    keys = tmp_path / "docs" / "guides" / "keys.md"
    os.utime(keys, (1_000_000_000, 1_000_000_000))
    human = run("ingest", "docs", cwd=tmp_path)
    assert "1 changed" in human.stdout and "nothing changed" not in human.stdout
    assert len(re.findall(r"ingest: (\d+)/\1 documents", human.stderr)) == 1, "the last progress line, once"
    os.utime(keys, (1_000_000_001, 1_000_000_001))
    summary = ingest_json(tmp_path, "docs")
    assert summary["changed"] == 1
    assert summary["unchanged"] == 1
    assert summary["embedded_chunks"] == 0


def test_emptied_source_root_keeps_the_store(tmp_path: Path) -> None:
    questions = write_good_corpus(tmp_path / "docs")
    ingest_json(tmp_path, "docs")
    shutil.rmtree(tmp_path / "docs")
    (tmp_path / "docs").mkdir()
    summary = ingest_json(tmp_path, "docs")
    assert summary["removed"] == 0
    assert summary["counts"]["done"] == len(questions)
    assert any("not deleting" in w for w in summary["warnings"])


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    proc = run("ingest", "nope", cwd=tmp_path, check_code=1)
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_source_that_is_a_symlink_loop_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    for source in ("loop", "loop/docs"):
        proc = run("ingest", source, cwd=tmp_path, check_code=1)
        assert "cannot read" in proc.stderr and "symbolic links" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_store_file_that_is_no_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Tulips\n\nThey flower in April.\n")
    (tmp_path / "store.db").write_bytes(bytes(range(256)) * 32)
    for args in (("ingest", "docs"), ("status",), ("search", "tulips")):
        proc = run(*args, "--db", "store.db", cwd=tmp_path, check_code=1)
        assert "store.db as a SQLite store (file is not a database)" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_root_that_cannot_be_listed_stops_the_ingest_and_an_empty_one_says_so(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    proc = run("ingest", "pipe", cwd=tmp_path, check_code=1, timeout=60)
    assert "pipe is neither a folder nor a regular file" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / ".docmill").exists()
    (tmp_path / "empty").mkdir()
    proc = run("ingest", "empty", cwd=tmp_path)
    assert "the sources listed no documents" in proc.stdout and "nothing changed" not in proc.stdout


def test_control_characters_in_names_and_text_never_reach_the_terminal(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "\x1b]0;pwned\x07zebra.md").write_text("# Zebra \x1b[2J facts\n\nThe zebra \x1b[31mruns\x1b[0m fast.\n")
    (docs / "bad\nname\x1b[5m.pdf").write_bytes(b"%PDF-1.4 broken")
    proc = run("ingest", "docs", cwd=tmp_path, check_code=3)
    found = run("search", "zebra", cwd=tmp_path)
    listed = run("deadletter", "list", cwd=tmp_path)
    for printed in (proc.stdout, proc.stderr, found.stdout, listed.stdout):
        assert "\x1b" not in printed and "\x07" not in printed, printed
    # Shown as escapes instead (rich wraps long lines where it likes).
    assert "\\x1b]0;pwned\\x07zebra.md" in found.stdout.replace("\n", "")
    assert "bad\\nname" in proc.stderr.replace("\n", "")


def test_reading_commands_without_a_store_say_where_to_point_them(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE notes (x)").connection.commit()
    for args in (("search", "tulips"), ("status",), ("documents",), ("deadletter", "list"), ("claims",),
                 ("trace", "--doc-id", "a.md"), ("monitor", "--json")):
        proc = run(*args, cwd=tmp_path, check_code=1)
        assert "no docmill store at .docmill/docmill.db: run `docmill ingest FOLDER` first" in proc.stderr
        assert "Traceback" not in proc.stderr
        proc = run(*args, "--db", "other.db", cwd=tmp_path, check_code=1)
        assert "other.db holds no docmill store" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / ".docmill").exists()


def test_bad_inputs_are_dead_lettered_and_good_files_finish(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    questions = write_good_corpus(docs)
    reasons = write_bad_corpus(docs)
    write_zero_byte(docs / "empty.txt")
    write_invalid_utf8(docs / "latin.txt")
    write_large_file(docs / "huge.txt", 3_000_000)
    (docs / "loop").symlink_to(docs, target_is_directory=True)
    config = tmp_path / "docmill.yaml"
    config.write_text("content_sources:\n  - name: docs\n    path: docs\n    max_file_size: 2MB\n"
                      "workers:\n  retry_delay: 0\n")
    proc = run("ingest", str(config), "--json", cwd=tmp_path, check_code=3)
    summary = json.loads(proc.stdout)
    assert "Traceback" not in proc.stderr
    dead = {Path(d["uri"]).relative_to(docs).as_posix(): d["error"] for d in summary["dead_letters"]}
    reasons["huge.txt"] = "over max_file_size"
    assert set(dead) == set(reasons), dead
    for relative, reason in reasons.items():
        assert reason in dead[relative], (relative, dead[relative])
    assert summary["counts"]["done"] == len(questions) + 2  # empty.txt and latin.txt are fine
    listed = json.loads(run("documents", "--state", "dead", "--json", cwd=tmp_path,
                            env={"DOCMILL_DATABASE_URL": ""}).stdout)
    assert len(listed) == len(reasons)
    assert top_uri(tmp_path, questions["notes/piano.txt"])[0].endswith("piano.txt")


def test_documents_without_text_are_done_and_named_in_the_summary(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lighthouse.md").write_text("# Lighthouses\n\nThe lamp turns once every ten seconds.")
    (docs / "blank.txt").write_text("  \n\n \t\n")
    scan = FPDF()
    scan.add_page()  # a page with nothing drawn as text: what a scanner without OCR gives
    (docs / "scan.pdf").write_bytes(bytes(scan.output()))
    proc = run("ingest", "docs", cwd=tmp_path)
    assert "warning: no text to index in" in proc.stderr and "docmill does no OCR" in proc.stderr
    rerun = ingest_json(tmp_path, "docs")  # nothing changed: nothing read, nothing to warn about
    assert rerun["no_text"] == 0 and rerun["warnings"] == []
    (docs / "blank.txt").write_text("\n\n")
    summary = ingest_json(tmp_path, "docs")
    assert summary["no_text"] == 1 and summary["warnings"] == [f"no text to index in {docs / 'blank.txt'}"]
    listed = {Path(d["uri"]).name: d for d in json.loads(run("documents", "--json", cwd=tmp_path).stdout)}
    assert {name: d["state"] for name, d in listed.items()} == dict.fromkeys(listed, "done")
    assert listed["scan.pdf"]["chunks"] == 0 and listed["lighthouse.md"]["chunks"] == 1


@needs_permissions
def test_unreadable_file_is_dead_lettered(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text("A readable note about tulips.")
    secret = docs / "secret.txt"
    secret.write_text("nobody may read this")
    secret.chmod(0)
    summary = json.loads(run("ingest", "docs", "--json", cwd=tmp_path, check_code=3, unprivileged=True).stdout)
    assert "permission denied" in summary["dead_letters"][0]["error"]


@needs_permissions
def test_a_read_only_store_is_searched_and_refuses_writes_clearly(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tulips.txt").write_text("Tulips are planted in autumn, a hand's depth into the soil.")
    ingest_json(tmp_path, "docs")
    store = tmp_path / ".docmill"
    assert not (store / "docmill.db-wal").exists()  # the last connection checkpointed it away
    for path in (store / "docmill.db", store):
        path.chmod(0o555)
    try:
        hits = json.loads(run("search", "when are tulips planted", "--json", cwd=tmp_path, unprivileged=True).stdout)
        assert hits[0]["uri"].endswith("tulips.txt")
        assert "done 1" in run("status", cwd=tmp_path, unprivileged=True).stdout
        refused = run("ingest", "docs", cwd=tmp_path, check_code=1, unprivileged=True)
        assert "it is read-only" in refused.stderr and "Traceback" not in refused.stderr
        stopped = run("stop", cwd=tmp_path, check_code=1, unprivileged=True)
        assert "cannot write to the SQLite store" in stopped.stderr and "Traceback" not in stopped.stderr
    finally:
        store.chmod(0o755)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("embedding:\n  batchsize: 4\nworkers:\n  max_workers: many\n")
    proc = run("validate", str(config), cwd=tmp_path, check_code=1)
    assert "embedding.batchsize" in proc.stderr and "batch_size" in proc.stderr
    assert "workers.max_workers" in proc.stderr
    assert "Traceback" not in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text("storage:\n  backend: postgresql\n  host: db.internal\n  password: ${DM_TEST_PW:-hunter2}\n")
    shown = run("validate", str(good), cwd=tmp_path).stdout
    assert "db.internal" in shown and "hunter2" not in shown


def test_workers_flag_and_init_db(tmp_path: Path) -> None:
    assert "schema ready" in run("init-db", cwd=tmp_path).stdout
    questions = write_good_corpus(tmp_path / "docs")
    summary = ingest_json(tmp_path, "docs", "--workers", "2")
    assert summary["workers"] == 2
    assert summary["counts"]["done"] == len(questions)
    assert summary["finalized"] is True


def test_files_deleted_while_queued_are_removed_not_dead_lettered(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"note{i:02d}.md").write_text(f"# Note {i}\n\nThe lighthouse log for day {i} says calm seas.\n")
    with FakeEmbeddingServer(latency=0.5) as server:  # slow: most files are still queued when they go
        (tmp_path / "cfg.yaml").write_text(
            f"content_sources:\n  - name: docs\n    path: docs\nworkers:\n  claim_batch_size: 1\n"
            f"  max_inflight_chunks: 1\nembedding:\n  provider: openai\n  model: fake\n"
            f"  base_url: {server.base_url}\n  dimensions: 32\n  batch_size: 1\n")
        proc = subprocess.Popen([*DOCMILL, "ingest", "cfg.yaml", "--json"], cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while server.count(200) < 1 and proc.poll() is None:
            time.sleep(0.05)
        for i in range(8, 12):
            (docs / f"note{i:02d}.md").unlink()
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["counts"] == {"pending": 0, "claimed": 0, "done": 8, "dead": 0}, stderr
    assert summary["removed"] == 4 and summary["dead_letters"] == []
