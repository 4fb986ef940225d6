"""What only the SQLite backend has: its query plans, and the connections a process keeps."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from docmill.backends.sqlite import Q, SQLiteBackend, connections
from docmill.errors import StoreError
from docmill.models import DocumentRef

RUN = "run-sqlite"


def test_claim_walks_its_indexes_on_a_big_queue(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "plan.db")
    store.init_schema()
    store.open_run(RUN, "{}")
    refs = [DocumentRef("src", f"k{i}", f"/k{i}", version="1") for i in range(20_000)]
    for i in range(0, len(refs), 5000):
        store.upsert_documents(RUN, refs[i:i + 5000], 1)
    store.claim(RUN, "w", 50, 60.0, 3)
    store.conn.execute("ANALYZE")  # statistics that say a scan is cheap must not win either
    params = {"run_id": RUN, "worker_id": "w", "limit": 10, "lease": 60.0, "token_prefix": "t", "max_attempts": 3}
    for name in ("claim_documents", "bury_exhausted"):
        steps = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + Q[name], params)]
        assert not any(s.startswith("SCAN documents") for s in steps), f"{name} scans the table: {steps}"
        assert any("documents_claimed" in s for s in steps), steps
    steps = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + Q["claim_documents"], params)]
    assert any("documents_pending" in s for s in steps), steps
    assert [d.attempts for d in store.claim(RUN, "w", 10, 60.0, 3)] == [1] * 10
    store.close()


def test_discovery_events_look_each_key_up(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "plan.db")
    store.init_schema()
    store.open_run(RUN, "{}")
    store.upsert_documents(RUN, [DocumentRef("src", f"k{i}", f"/k{i}", version="1") for i in range(2000)], 1)
    params = {"run_id": RUN, "source": "src", "keys": '[["k1", "discovered"]]'}
    steps = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + Q["discovery_events"], params)]
    assert any(s.startswith("SEARCH d ") and "doc_key=?" in s for s in steps), f"one lookup per key: {steps}"
    assert [e.kind for e in store.events(1)][:1] == ["discovered"]
    store.close()


def test_a_file_from_before_a_column_was_added_gets_it(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "old.db")
    store.init_schema()
    # As a schema-4 file was: the workers table without pid_ns.
    store.conn.executescript("ALTER TABLE workers DROP COLUMN pid_ns; DELETE FROM schema_version; "
                             "INSERT INTO schema_version (version) VALUES (4);")
    store.close()
    reopened = SQLiteBackend(tmp_path / "old.db")
    reopened.init_schema()
    reopened.register_worker("w", "run", "host", 7, "pid:[1]")
    assert reopened.conn.execute("SELECT pid_ns FROM workers").fetchall() == [("pid:[1]",)]
    assert reopened.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 5
    reopened.close()


@pytest.fixture
def no_kept_connections() -> Iterator[None]:
    connections.close_all()
    yield
    connections.close_all()


def _store_with_run(path: Path, run_id: str) -> None:
    store = SQLiteBackend(path)
    store.init_schema()
    store.open_run(run_id, "{}")
    store.close()


def test_a_store_reopened_in_one_process_reuses_its_connection(tmp_path: Path, no_kept_connections: None) -> None:
    _store_with_run(tmp_path / "s.db", RUN)
    first = SQLiteBackend(tmp_path / "s.db")
    kept = first.conn
    first.close()
    first.close()  # twice is harmless: the connection is handed back once
    second, third = SQLiteBackend(tmp_path / "s.db"), SQLiteBackend(tmp_path / "s.db")
    assert second.conn is kept and third.conn is not kept  # a kept connection serves one backend at a time
    assert second.get_run(RUN) is not None and third.get_run(RUN) is not None
    second.close()
    third.close()


def test_writes_from_another_connection_are_seen_by_a_kept_one(tmp_path: Path, no_kept_connections: None) -> None:
    _store_with_run(tmp_path / "s.db", RUN)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)  # as another process would write
    other.execute("UPDATE runs SET state = 'complete' WHERE run_id = ?", (RUN,))
    other.close()
    store = SQLiteBackend(tmp_path / "s.db")
    run = store.get_run(RUN)
    assert run is not None and run.state == "complete"
    store.close()


def test_a_replaced_or_overwritten_store_file_is_opened_afresh(tmp_path: Path, no_kept_connections: None) -> None:
    path = tmp_path / "s.db"
    _store_with_run(path, RUN)
    _store_with_run(tmp_path / "other.db", "other-run")
    connections.close_all()  # checkpointed: other.db is whole without its -wal
    os.replace(tmp_path / "other.db", path)
    store = SQLiteBackend(path)
    assert store.get_run(RUN) is None and store.get_run("other-run") is not None
    store.close()
    path.write_bytes(bytes(range(256)) * 64)  # overwritten in place: same inode, other content
    with pytest.raises(StoreError, match="file is not a database"):
        SQLiteBackend(path)
    path.unlink()
    fresh = SQLiteBackend(path)  # deleted: a new, empty store
    fresh.init_schema()
    assert fresh.get_run("other-run") is None
    fresh.close()


def test_a_process_keeps_few_stores_open(tmp_path: Path, no_kept_connections: None) -> None:
    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_files()
    for i in range(3 * connections.MAX_KEPT):
        _store_with_run(tmp_path / f"s{i}.db", RUN)
    assert open_files() - before <= 3 * connections.MAX_KEPT  # the file, its -wal and -shm per kept store
    connections.close_all()
    assert open_files() == before
    assert not list(tmp_path.glob("*-wal")), "closing the last connection checkpoints and removes the WAL"


def test_a_forked_child_never_uses_its_parents_connection(tmp_path: Path, no_kept_connections: None) -> None:
    _store_with_run(tmp_path / "s.db", RUN)
    parents = SQLiteBackend(tmp_path / "s.db")
    kept = parents.conn
    parents.close()
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if it opened a connection of its own that works
        child = SQLiteBackend(tmp_path / "s.db")
        ok = child.conn is not kept and child.get_run(RUN) is not None
        child.close()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    again = SQLiteBackend(tmp_path / "s.db")
    assert again.conn is kept and again.get_run(RUN) is not None
    again.close()


def test_a_full_disk_or_read_only_store_is_a_clear_error_and_rolls_back(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path / "full.db")
    try:
        store.init_schema()
        store.open_run("r", "{}")
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # what a full disk looks like to SQLite
        refs = [DocumentRef("s", f"doc{i:05d}-{'x' * 200}.md", f"/d/{i}") for i in range(2000)]
        with pytest.raises(StoreError, match=r"full\.db: the disk is full\. Free some space"):
            store.upsert_documents("r", refs, 1)
        assert not store.conn.in_transaction and store.count_source_documents("r", "s") == 0
        store.conn.execute("PRAGMA max_page_count = 1073741823")
        store.conn.execute("PRAGMA query_only = 1")
        with pytest.raises(StoreError, match="it is read-only"):
            store.upsert_documents("r", refs[:1], 1)
        store.conn.execute("PRAGMA query_only = 0")
        assert store.upsert_documents("r", refs[:3], 1).new == 3  # the same connection works again
    finally:
        store.close()
