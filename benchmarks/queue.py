"""Queue throughput: docmill's claim + fenced batch completion next to a bare single-statement baseline.

    python benchmarks/queue.py [--jobs 2000] [--backends sqlite,postgres] [--pg-url URL]

For claim batch 1/10/100 and 1/4/8 concurrent claimer processes, on each backend, prints JSON with
jobs/s and claim latency p50/p99 for docmill (leases, attempts history, fencing) and for the bare
baseline (one UPDATE … SKIP LOCKED … RETURNING to claim, one UPDATE to finish: the database's floor).
Without --pg-url a throwaway PostgreSQL is started with the pgserver wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder is sys.path[0] and "queue.py" would shadow the standard library's
# queue module (which multiprocessing imports): put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import tempfile
import time
from contextlib import ExitStack
from typing import Any

import numpy as np

from benchmarks.pg import fresh_database, postgres
from docmill.backends import open_backend
from docmill.backends.base import DocumentResult
from docmill.config import Config
from docmill.models import DocumentRef

RUN = "bench-run"
EMPTY = np.zeros((0, 0), dtype=np.float32)
BARE_CLAIM = {
    "sqlite": "UPDATE bare_jobs SET state = 'claimed' WHERE id IN (SELECT id FROM bare_jobs WHERE state = 'pending' "
              "ORDER BY id LIMIT ?) RETURNING id",
    "postgres": "UPDATE bare_jobs SET state = 'claimed' WHERE id IN (SELECT id FROM bare_jobs WHERE state = 'pending' "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
}
BARE_DONE = {"sqlite": "UPDATE bare_jobs SET state = 'done' WHERE id = ?",
             "postgres": "UPDATE bare_jobs SET state = 'done' WHERE id = %s"}


def _kind(url: str) -> str:
    return "postgres" if url.startswith("postgres") else "sqlite"


def _docmill_worker(url: str, batch: int, start: Any, out: Any) -> None:
    backend = open_backend(url, Config())
    latencies, done = [], 0
    result = DocumentResult(content_hash="h", title=None, mime="text/plain", chunks=[], vectors=EMPTY,
                            text_hashes=[], model_id="")
    start.wait()
    while True:
        t = time.perf_counter()
        docs = backend.claim(RUN, f"bench-{os.getpid()}", batch, 300, 3)
        latencies.append(time.perf_counter() - t)
        if not docs:
            break
        done += sum(backend.complete_many([(d, result) for d in docs]))
    backend.close()
    out.put((done, latencies))


def _bare_connect(url: str) -> Any:
    if _kind(url) == "postgres":
        import psycopg

        return psycopg.connect(url, autocommit=True)
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _bare_worker(url: str, batch: int, start: Any, out: Any) -> None:
    kind, conn = _kind(url), _bare_connect(url)
    latencies, done = [], 0
    start.wait()
    while True:
        t = time.perf_counter()
        if kind == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
        ids = [r[0] for r in conn.execute(BARE_CLAIM[kind], (batch,)).fetchall()]
        if kind == "sqlite":
            conn.execute("COMMIT")
        latencies.append(time.perf_counter() - t)
        if not ids:
            break
        for job in ids:
            conn.execute(BARE_DONE[kind], (job,))
            done += 1
    conn.close()
    out.put((done, latencies))


def _prepare(url: str, jobs: int) -> None:
    backend = open_backend(url, Config())
    backend.init_schema()
    backend.open_run(RUN, "{}")
    refs = [DocumentRef(source="bench", key=f"k{i}", uri=f"/bench/{i}", version="1") for i in range(jobs)]
    for i in range(0, jobs, 1000):
        backend.upsert_documents(RUN, refs[i:i + 1000], 1)
    backend.close()
    conn = _bare_connect(url)
    conn.execute("DROP TABLE IF EXISTS bare_jobs")
    serial = "bigserial" if _kind(url) == "postgres" else "INTEGER"
    conn.execute(f"CREATE TABLE bare_jobs (id {serial} PRIMARY KEY, state text NOT NULL)")
    conn.execute("CREATE INDEX bare_pending ON bare_jobs (id) WHERE state = 'pending'")
    if _kind(url) == "postgres":
        conn.execute("INSERT INTO bare_jobs (state) SELECT 'pending' FROM generate_series(1, %s)", (jobs,))
    else:
        conn.executemany("INSERT INTO bare_jobs (state) VALUES ('pending')", [()] * jobs)
    conn.close()


def _measure(target: Any, url: str, batch: int, claimers: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, batch, start, out)) for _ in range(claimers)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every process import and connect before the clock starts
    t0 = time.perf_counter()
    start.set()
    results = [out.get() for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    done = sum(r[0] for r in results)
    lat = np.array([x for r in results for x in r[1]]) * 1000
    return {"jobs": done, "jobs_per_sec": round(done / elapsed, 1),
            "claim_p50_ms": round(float(np.percentile(lat, 50)), 3),
            "claim_p99_ms": round(float(np.percentile(lat, 99)), 3)}


def _fresh_url(kind: str, tmp: Path, pg_base: str, n: int) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / f'queue_{n}.db'}"
    return fresh_database(pg_base, f"docmill_queue_bench_{n}")


def main() -> None:
    """Run every combination and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-url", help="an existing PostgreSQL (needs pgvector and CREATE DATABASE)")
    parser.add_argument("--batches", default="1,10,100")
    parser.add_argument("--claimers", default="1,4,8")
    args = parser.parse_args()
    kinds = args.backends.split(",")
    figures: dict[str, Any] = {"benchmark": "queue", "jobs": args.jobs, "cpus": os.cpu_count(), "results": []}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        pg_base = stack.enter_context(postgres(args.pg_url, Path(tmp))) if "postgres" in kinds else ""
        n = 0
        for kind in kinds:
            for batch in map(int, args.batches.split(",")):
                for claimers in map(int, args.claimers.split(",")):
                    row: dict[str, Any] = {"backend": kind, "batch": batch, "claimers": claimers}
                    for name, target in (("docmill", _docmill_worker), ("bare", _bare_worker)):
                        n += 1
                        url = _fresh_url(kind, Path(tmp), pg_base, n)
                        _prepare(url, args.jobs)
                        row[name] = _measure(target, url, batch, claimers)
                    row["docmill_vs_bare"] = round(row["docmill"]["jobs_per_sec"] / row["bare"]["jobs_per_sec"], 3)
                    figures["results"].append(row)
                    print(json.dumps(row), file=sys.stderr)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
