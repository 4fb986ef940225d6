"""What only the PostgreSQL backend has: query plans, concurrent schema creation, migrations,
connection errors and reconnection, pgvector/GIN indexes, LISTEN/NOTIFY and the connection budget."""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from docmill.backends import open_backend
from docmill.backends.base import SCHEMA_VERSION
from docmill.backends.postgres import PostgresBackend, Q, migrations, missing_vector_message
from docmill.backends.sqlfile import read_script
from docmill.config import Config
from docmill.errors import ConfigError, StoreError, TransientError
from docmill.models import Chunk, DocumentRef

from ..conftest import PgCluster, with_database
from .test_backend_contract import result

RUN = "run-pg"
PACKAGE = "docmill.backends.postgres"


@pytest.fixture
def pg(fresh_pg_url: str) -> Iterator[PostgresBackend]:
    store = PostgresBackend(fresh_pg_url, Config())
    store.init_schema()
    yield store
    store.close()


def plan(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> str:
    """The EXPLAIN text of a query with its parameters bound (a custom plan)."""
    with conn.transaction():
        lines = conn.execute("EXPLAIN " + query, params).fetchall()
    return "\n".join(r[0] for r in lines)


def generic_plan(conn: psycopg.Connection[Any], query: str, types: dict[str, str],
                 params: dict[str, Any]) -> str:
    """The EXPLAIN text of the plan PostgreSQL caches for a prepared statement (no parameter values),
    which psycopg uses after a statement has run a few times."""
    names = list(types)
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", query)
    with conn.transaction():
        conn.execute(f"PREPARE probe ({', '.join(types.values())}) AS {numbered}")
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        args = ", ".join(psycopg.sql.Literal(params[n]).as_string(conn) for n in names)
        lines = conn.execute(f"EXPLAIN EXECUTE probe ({args})").fetchall()
        conn.execute("DEALLOCATE probe")
    return "\n".join(r[0] for r in lines)


# -- the claim never scans the table ---------------------------------------------------------
def test_claim_uses_its_indexes_on_100k_rows(pg: PostgresBackend) -> None:
    pg.open_run(RUN, "{}")
    pg.open_run("other", "{}")
    with pg.conn.transaction():
        # 100k documents: 90% done, 8% pending (some not due yet), 2% claimed (half lapsed),
        # plus 20k of another run: the shape of a big run near its end.
        pg.conn.execute("""
            INSERT INTO documents (run_id, source, doc_key, uri, state, priority, attempts, available_at,
                                   lease_token, lease_expires_at)
            SELECT CASE WHEN i <= 100000 THEN 'run-pg' ELSE 'other' END, 'src', 'k' || i, '/d/' || i,
                   CASE WHEN i % 100 < 90 THEN 'done' WHEN i % 100 < 98 THEN 'pending' ELSE 'claimed' END,
                   i % 3, 1,
                   CASE WHEN i % 7 = 0 THEN now() + interval '1 hour' ELSE now() END,
                   CASE WHEN i % 100 >= 98 THEN 't' || i END,
                   CASE WHEN i % 100 = 98 THEN now() - interval '1 minute'
                        WHEN i % 100 = 99 THEN now() + interval '1 hour' END
            FROM generate_series(1, 120000) AS i""")
        # One finished attempt per document, and an open one per claimed document.
        pg.conn.execute("""
            INSERT INTO attempts (document_id, run_id, attempt, worker_id, lease_token, outcome)
            SELECT id, run_id, 1, 'w', 'old-' || id, CASE WHEN state = 'claimed' THEN NULL ELSE 'done' END
            FROM documents""")
    with pg.conn.transaction():
        pg.conn.execute("ANALYZE documents")
        pg.conn.execute("ANALYZE attempts")

    claim = {"run_id": RUN, "worker_id": "w", "limit": 10, "lease": 60.0, "max_attempts": 3,
             "token_prefix": "p"}
    claim_types = {"run_id": "text", "limit": "int", "max_attempts": "int", "token_prefix": "text",
                   "worker_id": "text", "lease": "float8"}
    for text in (plan(pg.conn, Q["claim_documents"], claim),
                 generic_plan(pg.conn, Q["claim_documents"], claim_types, claim)):
        assert "Seq Scan" not in text, f"the claim scans a table:\n{text}"
        # Pending rows through their partial index; lapsed and exhausted claims through theirs.
        assert "documents_pending" in text and "documents_claimed" in text, text

    # Claim latency on this table, reported (not asserted: tests check behaviour, benchmarks time).
    latencies = []
    for _ in range(100):
        start = time.perf_counter()
        docs = pg.claim(RUN, "w", 10, 60.0, 3)
        latencies.append((time.perf_counter() - start) * 1000)
        assert len(docs) == 10
    latencies.sort()
    print(json.dumps({"claim_batch": 10, "rows": 120000, "p50_ms": round(statistics.median(latencies), 3),
                      "p99_ms": round(latencies[98], 3)}))


# -- schema ----------------------------------------------------------------------------------
INIT_SCRIPT = textwrap.dedent("""
    import sys, time
    from docmill.backends import open_backend
    from docmill.config import Config
    start = float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))  # all processes call init_schema together
    store = open_backend(sys.argv[1], Config())
    store.init_schema()
    store.open_run("run-pg", "{}")
    store.close()
""")


def test_init_schema_from_ten_processes_at_once(fresh_pg_url: str) -> None:
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", INIT_SCRIPT, fresh_pg_url, str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(10)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    with psycopg.connect(fresh_pg_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)


def _schema_of(url: str) -> dict[str, Any]:
    """Tables, columns, constraints and indexes of the public schema, comparable across databases."""
    with psycopg.connect(url) as conn:
        columns = conn.execute("""
            SELECT table_name, column_name, ordinal_position, data_type, udt_name, is_nullable,
                   column_default, is_identity, identity_generation, is_generated, generation_expression
            FROM information_schema.columns WHERE table_schema = 'public'
            ORDER BY table_name, ordinal_position""").fetchall()
        constraints = conn.execute("""
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""").fetchall()
        indexes = conn.execute("""
            SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
            ORDER BY 1, 2""").fetchall()
    return {"columns": columns, "constraints": constraints, "indexes": indexes}


def test_migrations_build_the_same_schema_as_schema_sql(pg_url: str, fresh_pg_url: str) -> None:
    numbers = [n for n, _ in migrations()]
    assert numbers[-1] == SCHEMA_VERSION, "every schema version has its migration"
    via_migrations = fresh_pg_url
    name = f"docmill_test_schema_{time.time_ns()}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    via_schema = with_database(pg_url, name)
    try:
        with psycopg.connect(via_schema) as conn:
            conn.execute("CREATE EXTENSION vector")
            conn.execute(read_script(PACKAGE, "schema.sql"))
        with psycopg.connect(via_migrations) as conn:
            conn.execute("CREATE EXTENSION vector")
            for _, filename in migrations():
                conn.execute(read_script(PACKAGE, f"migrations/{filename}"))
        expected, got = _schema_of(via_schema), _schema_of(via_migrations)
        assert len(expected["columns"]) > 50 and len(expected["indexes"]) > 10
        for part in expected:
            assert got[part] == expected[part], part
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_init_schema_migrates_an_older_database(fresh_pg_url: str) -> None:
    # A database left at version 0 (tables missing, version table present) gets every migration.
    with psycopg.connect(fresh_pg_url) as conn:
        conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
    store = PostgresBackend(fresh_pg_url, Config())
    try:
        store.init_schema()
        assert store.open_run(RUN, "{}").state == "ingesting"
    finally:
        store.close()
    with psycopg.connect(fresh_pg_url) as conn:
        assert conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall() == [
            (n,) for n, _ in migrations()]


# -- clear errors ----------------------------------------------------------------------------
def test_missing_vector_extension_is_explained(pg_url: str) -> None:
    # A plain (non-superuser) owner of a database without pgvector cannot create the extension
    # (pgvector is not a trusted extension): exactly what a user of a managed PostgreSQL meets.
    suffix = time.time_ns()
    role, dbname = f"docmill_plain_{suffix}", f"docmill_test_novector_{suffix}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'CREATE DATABASE "{dbname}" OWNER "{role}"')
    url = with_database(pg_url, dbname).replace("postgresql://postgres@", f"postgresql://{role}@")
    try:
        store = open_backend(url, Config())
        with pytest.raises(StoreError) as caught:
            store.init_schema()
        store.close()
        message = str(caught.value)
        assert message.startswith("the vector extension is not installed in this PostgreSQL: install pgvector")
        assert "https://github.com/pgvector/pgvector#installation" in message
        assert "CREATE EXTENSION vector" in message and "permission denied" in message
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    # The extension's files missing altogether cannot be staged here; the message is the same.
    assert missing_vector_message('extension "vector" is not available') == (
        "the vector extension is not installed in this PostgreSQL: install pgvector "
        "(https://github.com/pgvector/pgvector#installation) or ask your DBA to run CREATE EXTENSION vector "
        '(extension "vector" is not available)')


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_unreachable_database_names_the_host_never_the_password() -> None:
    port = _closed_port()
    url = f"postgresql://docmill:s3cret%40pass@127.0.0.1:{port}/docmilldb"
    config = Config(storage={"pool_timeout": 2})
    with pytest.raises(StoreError) as caught:
        open_backend(url, config)
    message = str(caught.value)
    assert message.startswith(f"cannot connect to PostgreSQL at 127.0.0.1:{port}/docmilldb: ")
    assert "s3cret" not in message and "%40pass" not in message


def test_connection_budget_is_checked_against_pool_size() -> None:
    config = Config(storage={"pool_size": 10})
    PostgresBackend.check_connection_budget(config, 5)
    with pytest.raises(ConfigError, match=r"storage.pool_size is 10 .* workers.max_workers = 6 .* need 12"):
        PostgresBackend.check_connection_budget(config, 6)


# -- reconnection ----------------------------------------------------------------------------
def test_database_restart_is_survived(pg_server: PgCluster, fresh_pg_url: str) -> None:
    # trust authentication ignores the password, which lets the test check it never leaks.
    url = fresh_pg_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    store = PostgresBackend(url, Config())
    listener = PostgresBackend(url, Config())
    try:
        store.init_schema()
        store.open_run(RUN, "{}")
        store.upsert_documents(RUN, [DocumentRef("src", "a", "/a"), DocumentRef("src", "b", "/b")], 1)
        held = store.claim(RUN, "w", 1, 60.0, 3)
        assert not listener.wait_for_work(RUN, 0.05)  # starts listening

        pg_server.restart()  # every open connection is cut
        assert store.counts(RUN) == {"pending": 1, "claimed": 1, "done": 0, "dead": 0}, "reconnected"
        assert store.complete(held[0], result(["after the restart"], seed=1)), "the lease survived"

        pg_server.stop(mode="immediate")  # a crash: committed work survives recovery
        store.reconnect_deadline = 1.0
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            store.counts(RUN)
        assert time.monotonic() - started < 10
        assert "could not reconnect" in str(caught.value) and "hunter2" not in str(caught.value)
        pg_server.start()
        assert store.counts(RUN)["done"] == 1

        # The listener re-subscribes on its new connection.
        assert not listener.wait_for_work(RUN, 0.05)
        listener.counts(RUN)  # its first operation after the restart reconnects (and LISTENs again)
        store.upsert_documents(RUN, [DocumentRef("src", "c", "/c")], 1)
        assert listener.wait_for_work(RUN, 5.0)
    finally:
        store.close()
        listener.close()


def _cut_the_connection(pg: PostgresBackend, statement: str, *, after: bool) -> None:
    """The server drops the backend's connection just before or just after its next ``statement``."""
    real_execute = pg.conn.execute

    def execute(query: Any, params: Any = None) -> Any:
        if query is Q[statement] and not after:
            real_execute("SELECT pg_terminate_backend(pg_backend_pid())")
        cursor = real_execute(query, params)
        if query is Q[statement] and after:
            # The statement has committed; the server goes away before the client hears of it.
            real_execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return cursor

    pg.conn.execute = execute  # type: ignore[method-assign]


def test_a_claim_cut_off_mid_statement_is_recovered_not_stranded(pg: PostgresBackend) -> None:
    pg.open_run(RUN, "{}")
    pg.upsert_documents(RUN, [DocumentRef("src", k, f"/{k}") for k in "abcd"], 1)
    first = pg.conn
    _cut_the_connection(pg, "claim_documents", after=True)
    docs = pg.claim(RUN, "w", 2, 60.0, 3)
    assert pg.conn is not first, "the backend reconnected"
    assert [d.key for d in docs] == ["a", "b"], "the committed claim was found, not made again"
    assert pg.counts(RUN) == {"pending": 2, "claimed": 2, "done": 0, "dead": 0}
    assert pg.complete(docs[0], result(["recovered"], seed=1)), "its lease token is the one stored"

    _cut_the_connection(pg, "claim_documents", after=False)  # a claim that never reached the server
    assert [d.key for d in pg.claim(RUN, "w", 1, 60.0, 3)] == ["c"], "is simply made again"
    assert pg.counts(RUN) == {"pending": 1, "claimed": 2, "done": 1, "dead": 0}


@pytest.mark.parametrize("after", [True, False], ids=["after-commit", "before-commit"])
def test_a_completion_cut_off_mid_statement_is_known_not_guessed(pg: PostgresBackend, after: bool) -> None:
    pg.open_run(RUN, "{}")
    pg.upsert_documents(RUN, [DocumentRef("src", k, f"/{k}") for k in "ab"], 1)
    a, b = pg.claim(RUN, "w", 2, 60.0, 3)
    pg.reset_claims(RUN, 0.0, "operator")  # both leases taken away; a is claimed again, b stays lost
    a = pg.claim(RUN, "w", 1, 60.0, 3)[0]
    assert a.key == "a"
    first = pg.conn
    _cut_the_connection(pg, "complete_documents", after=after)
    outcome = pg.complete_many([(a, result(["one", "two"], seed=1)), (b, result(["stale"], seed=2))])
    assert pg.conn is not first, "the backend reconnected"
    assert outcome == [True, False], "the completion reports what it did, committed once"
    assert pg.counts(RUN) == {"pending": 1, "claimed": 0, "done": 1, "dead": 0}
    texts = [t for (t,) in pg.conn.execute("SELECT text FROM chunks ORDER BY document_id, ordinal")]
    assert texts == ["one", "two"], "chunks written once, none from the fenced document"
    outcomes = dict(pg.conn.execute("SELECT lease_token, outcome FROM attempts WHERE lease_token = ANY(%s)",
                                    ([a.lease_token, b.lease_token],)).fetchall())
    assert outcomes == {a.lease_token: "done", b.lease_token: "fenced"}


def test_pool_recycle_replaces_old_connections(fresh_pg_url: str) -> None:
    store = PostgresBackend(fresh_pg_url, Config(storage={"pool_recycle": 0.2}))
    try:
        store.init_schema()
        first_pid = store.conn.info.backend_pid
        store.open_run(RUN, "{}")
        assert store.conn.info.backend_pid == first_pid
        time.sleep(0.3)
        store.get_run(RUN)
        assert store.conn.info.backend_pid != first_pid
    finally:
        store.close()


def test_connections_are_named_docmill(pg: PostgresBackend, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        names = conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                             (pg.conn.info.backend_pid,)).fetchall()
    assert names == [("docmill",)]


# -- LISTEN / NOTIFY -------------------------------------------------------------------------
def test_idle_workers_wake_on_new_work(pg: PostgresBackend, fresh_pg_url: str) -> None:
    pg.open_run(RUN, "{}")
    waiter = PostgresBackend(fresh_pg_url, Config())
    try:
        assert not waiter.wait_for_work(RUN, 0.1), "nothing happened: timeout"
        woke: list[tuple[bool, float]] = []

        def wait() -> None:
            start = time.monotonic()
            woke.append((waiter.wait_for_work(RUN, 10.0), time.monotonic() - start))

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.2)
        pg.upsert_documents(RUN, [DocumentRef("src", "a", "/a")], 1)
        thread.join()
        assert woke[0][0] and woke[0][1] < 5.0

        # A notice sent while the worker was busy is not lost: it is waiting when the worker asks.
        doc = waiter.claim(RUN, "w", 1, 60.0, 3)[0]
        assert waiter.fail(doc, "TransientError", "later", 0.0)
        assert waiter.wait_for_work(RUN, 0.0) or waiter.wait_for_work(RUN, 1.0)
        doc = pg.claim(RUN, "w2", 1, 60.0, 3)[0]
        pg.release([doc])
        assert waiter.wait_for_work(RUN, 5.0)
        assert not waiter.wait_for_work("another-run", 0.05)
        long_run = "r" * 100  # channel names stop at 63 bytes: long run ids are hashed
        pg.open_run(long_run, "{}")
        assert not waiter.wait_for_work(long_run, 0.05)
        pg.upsert_documents(long_run, [DocumentRef("src", "a", "/a")], 1)
        assert waiter.wait_for_work(long_run, 5.0)
    finally:
        waiter.close()


# -- indexes of search -----------------------------------------------------------------------
def test_vector_and_text_search_use_their_indexes(pg: PostgresBackend) -> None:
    pg.open_run(RUN, "{}")
    pg.upsert_documents(RUN, [DocumentRef("src", "seed", "/seed")], 1)
    (doc,) = pg.claim(RUN, "w", 1, 60.0, 3)
    assert pg.complete(doc, result(["the seed chunk about zebras"], seed=1))  # creates chunks_hnsw_8
    with pg.conn.transaction():
        pg.conn.execute("""
            INSERT INTO chunks (document_id, ordinal, text, char_start, char_end, text_hash, dims, embedding)
            SELECT %s, i, 'chunk number ' || i || CASE WHEN i %% 100 = 0 THEN ' zebras' ELSE ' horses' END
                          || repeat(' and some ordinary words of a chunk', 20),
                   0, 10, 'h' || i, 8,
                   (SELECT array_agg(random() - 0.5)::real[] FROM generate_series(1, 8) AS g WHERE i > 0)::vector
            FROM generate_series(1, 5000) AS i""", (doc.id,))
        pg.conn.execute("ANALYZE chunks")
    query = np.ones(8, dtype=np.float32) / np.sqrt(8)
    vector_sql = Q["vector_search"].format(dims=8, run_filter="")
    text = plan(pg.conn, vector_sql, {"query": query, "k": 5, "candidates": 100})
    assert "chunks_hnsw_8" in text, text
    text_sql = Q["text_search"].format(run_filter="")
    text = plan(pg.conn, text_sql, {"query": '"zebras"', "k": 5})
    assert "chunks_tsv" in text and "Seq Scan on chunks" not in text, text

    hits = pg.vector_search(query, 5, None)
    assert len(hits) == 5 and hits == sorted(hits, key=lambda h: -h.score)
    exact = pg.conn.execute(
        "SELECT max(1 - (embedding::vector(8) <=> %b::vector(8))) FROM chunks", (query,)).fetchone()[0]
    pg.conn.rollback()
    assert hits[0].score == pytest.approx(exact, abs=0.05), "the approximate index finds the near top"
    assert len(pg.vector_search(query, 5, [RUN])) == 5
    assert len(pg.text_search("zebras", 100, None)) == 51


def test_chunks_of_two_dimensions_live_side_by_side(pg: PostgresBackend) -> None:
    pg.open_run(RUN, "{}")
    pg.upsert_documents(RUN, [DocumentRef("src", "a", "/a"), DocumentRef("src", "b", "/b")], 1)
    a, b = pg.claim(RUN, "w", 2, 60.0, 3)
    assert pg.complete(a, result(["small"], seed=1, dim=4))
    assert pg.complete(b, result(["large"], seed=2, dim=16))
    assert [h.text for h in pg.vector_search(np.ones(4, dtype=np.float32) / 2, 5, None)] == ["small"]
    assert [h.text for h in pg.vector_search(np.ones(16, dtype=np.float32) / 4, 5, None)] == ["large"]
    with pytest.raises(StoreError, match="4/16-dimensional vectors but the query has 5"):
        pg.vector_search(np.ones(5, dtype=np.float32), 5, None)
    names = {r[0] for r in pg.conn.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'chunks_hnsw_%'")}
    pg.conn.rollback()
    assert names == {"chunks_hnsw_4", "chunks_hnsw_16"}


def test_chunk_rows_keep_their_metadata(pg: PostgresBackend) -> None:
    pg.open_run(RUN, "{}")
    pg.upsert_documents(RUN, [DocumentRef("src", "a", "/a")], 1)
    (doc,) = pg.claim(RUN, "w", 1, 60.0, 3)
    res = result(["x"], seed=3)
    res.chunks[0] = Chunk(ordinal=0, text="Ünïcödé \"quoted\" text", embed_text="e", heading_path=("H1", "H2 ü"),
                          page=None, char_start=5, char_end=9, token_count=4)
    assert pg.complete(doc, res)
    (hit,) = pg.text_search("quoted", 1, None)
    assert (hit.text, hit.heading_path, hit.page, hit.char_start, hit.char_end) == (
        "Ünïcödé \"quoted\" text", ["H1", "H2 ü"], None, 5, 9)
    with pg.conn.transaction():
        stored = pg.conn.execute("SELECT embedding, metadata FROM chunks JOIN documents d ON d.id = document_id"
                                 ).fetchone()
    np.testing.assert_allclose(stored[0], res.vectors[0], rtol=1e-6)
    assert stored[1] == {"seed": 3}


def test_a_backend_opened_before_the_schema_learns_the_vector_type(fresh_pg_url: str) -> None:
    early = PostgresBackend(fresh_pg_url, Config())  # e.g. a heartbeat backend opened first
    late = PostgresBackend(fresh_pg_url, Config())
    try:
        late.init_schema()
        late.open_run(RUN, "{}")
        late.upsert_documents(RUN, [DocumentRef("src", "a", "/a")], 1)
        (doc,) = early.claim(RUN, "w", 1, 60.0, 3)
        assert early.complete(doc, result(["vectors from the early backend"], seed=5))
        assert [h.text for h in early.vector_search(result(["q"], seed=5).vectors[0], 1, None)] == [
            "vectors from the early backend"]
    finally:
        early.close()
        late.close()


# -- status on a big queue uses indexes (issue 5) ---------------------------------------------
def test_status_queries_use_indexes_on_100k_rows(pg: PostgresBackend) -> None:
    pg.open_run(RUN, "{}")
    pg.open_run("other", "{}")
    with pg.conn.transaction():
        pg.conn.execute("""
            INSERT INTO documents (run_id, source, doc_key, uri, state, attempts, lease_token, lease_expires_at,
                                   error_class, updated_at)
            SELECT CASE WHEN i <= 100000 THEN 'run-pg' ELSE 'other' END, 'src', 'k' || i, '/d/' || i,
                   CASE WHEN i % 100 < 95 THEN 'done' WHEN i % 100 < 98 THEN 'pending'
                        WHEN i % 100 < 99 THEN 'claimed' ELSE 'dead' END, 1,
                   CASE WHEN i % 100 = 98 THEN 't' || i END,
                   CASE WHEN i % 100 = 98 THEN now() + interval '1 hour' END,
                   CASE WHEN i % 100 = 99 THEN 'CorruptDocumentError' END,
                   now() - (i % 3600) * interval '1 second'
            FROM generate_series(1, 120000) AS i""")
        pg.conn.execute("""
            INSERT INTO attempts (document_id, run_id, attempt, worker_id, lease_token, claimed_at, finished_at,
                                  outcome)
            SELECT id, run_id, 1, 'w', coalesce(lease_token, 'old-' || id), updated_at - interval '1 second',
                   CASE WHEN state = 'claimed' THEN NULL ELSE updated_at END,
                   CASE WHEN state = 'claimed' THEN NULL WHEN state = 'dead' THEN 'dead' ELSE 'done' END
            FROM documents""")
    pg.conn.commit()
    pg.conn.autocommit = True
    pg.conn.execute("VACUUM ANALYZE documents")
    pg.conn.execute("VACUUM ANALYZE attempts")
    pg.conn.autocommit = False
    checks = {"counts": {"run_id": RUN}, "failure_counts": {"run_id": RUN}, "claims": {"run_id": RUN, "limit": 1000},
              "recent_completions": {"run_id": RUN, "window": 300.0}, "chunk_count": {"run_id": RUN},
              "recent_errors": {"run_id": RUN, "limit": 10}}
    for name, params in checks.items():
        text = plan(pg.conn, Q[name], params)
        assert "Seq Scan on documents" not in text and "Seq Scan on attempts" not in text, f"{name}:\n{text}"
    assert "documents_state" in plan(pg.conn, Q["counts"], checks["counts"])
    assert "attempts_run_outcome" in plan(pg.conn, Q["recent_completions"], checks["recent_completions"])
    claims_plan = plan(pg.conn, Q["claims"], checks["claims"])
    assert "documents_claimed" in claims_plan or "documents_state" in claims_plan, claims_plan
    stats_start = time.perf_counter()
    from docmill.stats import collect

    stats = collect(pg, Config(), RUN)
    elapsed = time.perf_counter() - stats_start
    assert stats.counts == {"pending": 3000, "claimed": 1000, "done": 95000, "dead": 1000}
    assert stats.failures_by_class == {"CorruptDocumentError": 1000}
    print(json.dumps({"status_rows": 120000, "collect_ms": round(elapsed * 1000, 1)}))
