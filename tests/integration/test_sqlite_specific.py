"""What only the SQLite backend has: its query plans."""

from __future__ import annotations

from pathlib import Path

from docmill.backends.sqlite import Q, SQLiteBackend
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
