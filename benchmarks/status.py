"""How fast ``docmill status --json`` answers on a big queue (goal: under 300 ms on PostgreSQL).

    python benchmarks/status.py [--documents 1000000] [--pg-url URL]

Bulk-inserts the documents with generate_series (95% done, 3% pending, 1% claimed, 1% dead over four
error classes), one finished attempt per finished document spread over the last 30 minutes, an open
attempt per claim and 20 workers; VACUUM ANALYZE; then times the status queries (each one and the
whole ``collect``) and the ``docmill status --json`` command end to end. Prints JSON.
Without --pg-url a throwaway PostgreSQL is started with the pgserver wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import psycopg

from benchmarks.pg import fresh_database, postgres
from docmill.backends.postgres import PostgresBackend
from docmill.config import Config
from docmill.stats import WINDOWS, collect

RUN = "bench-status"

FILL = """
INSERT INTO documents (run_id, source, doc_key, uri, state, attempts, lease_token, claimed_by, lease_expires_at,
                       error_class, last_error, chunk_count, updated_at, done_at)
SELECT %(run)s, 'docs', 'k' || i, '/data/docs/file_' || i || '.md',
       CASE WHEN i %% 100 < 95 THEN 'done' WHEN i %% 100 < 98 THEN 'pending' WHEN i %% 100 < 99 THEN 'claimed'
            ELSE 'dead' END,
       1,
       CASE WHEN i %% 100 = 98 THEN 'lease-' || i END,
       CASE WHEN i %% 100 = 98 THEN 'worker-' || (i %% 20) END,
       CASE WHEN i %% 100 = 98 THEN now() + interval '5 minutes' END,
       CASE WHEN i %% 100 = 99 THEN (ARRAY['CorruptDocumentError', 'UnsupportedFormatError',
                                          'DocumentTooLargeError', 'TransientError'])[1 + (i / 100) %% 4] END,
       CASE WHEN i %% 100 = 99 THEN 'error on line ' || i END,
       CASE WHEN i %% 100 < 95 THEN 4 ELSE 0 END,
       now() - (i %% 1800) * interval '1 second',
       CASE WHEN i %% 100 < 95 THEN now() - (i %% 1800) * interval '1 second' END
FROM generate_series(1, %(n)s) AS i
"""
ATTEMPTS = """
INSERT INTO attempts (document_id, run_id, attempt, worker_id, lease_token, claimed_at, finished_at, outcome)
SELECT id, run_id, 1, coalesce(claimed_by, 'worker-1'), coalesce(lease_token, 'old-' || id),
       updated_at - interval '2 seconds', CASE WHEN state = 'claimed' THEN NULL ELSE updated_at END,
       CASE state WHEN 'done' THEN 'done' WHEN 'dead' THEN 'dead' WHEN 'pending' THEN 'retry' END
FROM documents WHERE run_id = %(run)s
"""
WORKERS = """
INSERT INTO workers (worker_id, run_id, host, pid, current_docs, processed)
SELECT 'worker-' || i, %(run)s, 'host-' || (i %% 5), 1000 + i, 10, 50000 FROM generate_series(0, 19) AS i
"""


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Median and worst of ``repeat`` calls, in milliseconds."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(statistics.median(runs), 2), "max_ms": round(max(runs), 2)}


def main() -> None:
    """Fill, time, print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--pg-url", help="an existing PostgreSQL (needs pgvector and CREATE DATABASE)")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, postgres(args.pg_url, Path(tmp)) as base:
        url = fresh_database(base, "docmill_status_bench")
        store = PostgresBackend(url, Config())
        store.init_schema()
        store.open_run(RUN, "{}")
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL, {"run": RUN, "n": args.documents})
            conn.execute(ATTEMPTS, {"run": RUN})
            conn.execute(WORKERS, {"run": RUN})
            conn.execute("VACUUM ANALYZE documents")
            conn.execute("VACUUM ANALYZE attempts")
        fill_seconds = time.perf_counter() - started
        config = Config()
        queries = {
            "counts": lambda: store.counts(RUN),
            **{f"recent_completions_{k}": (lambda s=s: store.recent_completions(RUN, s)) for k, s in WINDOWS.items()},
            "worker_rows": lambda: store.worker_rows(RUN),
            "claims": lambda: store.claims(RUN),
            "failure_counts": lambda: store.failure_counts(RUN),
            "chunk_count": lambda: store.chunk_count(RUN),
            "get_run": lambda: store.get_run(RUN),
        }
        collect(store, config, RUN)  # warm the caches once, as a long-lived database would be
        figures: dict[str, Any] = {
            "benchmark": "status", "documents": args.documents, "fill_seconds": round(fill_seconds, 1),
            "cpus": os.cpu_count(),
            "queries": {name: timed(fn, args.repeat) for name, fn in queries.items()},
            "collect": timed(lambda: collect(store, config, RUN), args.repeat),
        }
        stats = collect(store, config, RUN)
        figures["status_sample"] = {"counts": stats.counts, "throughput_windows": stats.throughput_windows,
                                    "p95_processing_time": stats.p95_processing_time,
                                    "failures_by_class": stats.failures_by_class, "claimed": len(store.claims(RUN))}
        store.close()
        env = {**os.environ, "DOCMILL_DATABASE_URL": url}
        cmd = [sys.executable, "-m", "docmill", "status", "--json", "--run-id", RUN]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        figures["cli_status_json_seconds"] = round(time.perf_counter() - start, 3)
        figures["cli_query_seconds"] = json.loads(proc.stdout)["query_seconds"]
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
