"""SQLite backend: the whole store in one file, safe for several worker processes on one machine."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from docmill.backends.base import (
    SCHEMA_VERSION,
    ClaimedDocument,
    ClaimRow,
    CompletionStats,
    DocumentLinks,
    DocumentResult,
    DocumentRow,
    ErrorRow,
    EventRow,
    Existing,
    RateBucket,
    Relationship,
    RunInfo,
    SearchHit,
    UpsertCounts,
    WorkerRow,
)
from docmill.backends.common import (
    FENCED_DETAIL,
    batched,
    chunk_rows,
    claimed_documents,
    completion_stats,
    count_upserts,
    discovery_kinds,
    done_detail,
    done_params,
    event_detail,
    existing_from_rows,
    from_blob,
    fts_query,
    new_token_prefix,
    refs_to_write,
    run_from_row,
    to_blob,
    within,
)
from docmill.backends.sqlfile import load_queries, read_script
from docmill.backends.sqlite import connections
from docmill.config import Config
from docmill.errors import StoreError, StoreUnavailableError
from docmill.models import DocState, DocumentRef

Q = load_queries(__name__)
_T = TypeVar("_T")
RL = load_queries(__name__, "ratelimit.sql")


# (table, column, type) added to a table after schema version 1, for files created before them.
_ADDED_COLUMNS = (("workers", "pid_ns", "TEXT"),)


_READ_ONLY = ("it is read-only (permissions of the file or its folder, or a read-only mount): make both "
              "writable or give another --db")


def _write_problem(exc: sqlite3.OperationalError) -> str | None:
    """What the user must do about a write the file system refused; None for any other error."""
    primary = getattr(exc, "sqlite_errorcode", -1) & 0xFF  # extended codes keep the primary in the low byte
    if primary == sqlite3.SQLITE_FULL:
        return ("the disk is full. Free some space (or give another --db) and run the same command again: "
                "what was stored stays, the rest is done then")
    if primary == sqlite3.SQLITE_READONLY:
        return _READ_ONLY
    if primary == sqlite3.SQLITE_IOERR:
        return f"the file system reported an I/O error ({exc}): check the disk, then run the same command again"
    return None


@dataclass
class _Kept:
    """What a backend keeps with its connection for the next backend on the file (see connections)."""

    vectors: tuple[tuple[object, ...], np.ndarray, np.ndarray] | None = None  # search's matrix, by chunk stamp
    reads: dict[tuple[Any, ...], tuple[tuple[int, ...], Any]] = field(default_factory=dict)  # by query and args


class SQLiteBackend:
    """The Backend Protocol on one SQLite file (WAL, ``BEGIN IMMEDIATE`` for every write)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        if not create and not self.path.is_file():
            raise StoreError(f"no docmill store at {self.path}: run `docmill ingest FOLDER` first, or point --db "
                             "(or storage.path) at the store it filled")
        self._kept = _Kept()
        self._closed = False
        self._as_it_stands = False
        if (kept := connections.take(self.path)) is not None:
            self.conn, self._kept = kept
            return
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = self._connect(str(self.path))
        except sqlite3.OperationalError as exc:
            if create or _write_problem(exc) != _READ_ONLY or not self._readable_as_is():
                raise self._open_error(exc) from None
            # Even reading a WAL store writes its index file beside it. A store nobody is writing (no
            # WAL left over) on a read-only folder or mount is read as it stands; any write then fails
            # with the read-only message.
            self.conn = self._connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True)
            self._as_it_stands = True
        except (OSError, sqlite3.Error) as exc:
            raise self._open_error(exc) from None

    def _connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        """A connection with docmill's settings; the first statement reads the file, so a file that is
        no database, or cannot be written, fails here."""
        conn = sqlite3.connect(target, isolation_level=None, timeout=60.0, check_same_thread=False, uri=uri)
        try:
            conn.create_function("now", 0, time.time)
            conn.execute("PRAGMA busy_timeout = 60000")
            if uri:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            else:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def _wal(self) -> Path:
        """The store's write-ahead log file."""
        return self.path.with_name(self.path.name + "-wal")

    def _readable_as_is(self) -> bool:
        """True when no other process has writes pending in the store's WAL (reading the file alone
        then sees all of it)."""
        try:
            return self._wal.stat().st_size == 0
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def _open_error(self, exc: BaseException) -> StoreError:
        """The error to show for a store that cannot be opened."""
        cannot_open = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_CANTOPEN
        problem = _write_problem(exc) if isinstance(exc, sqlite3.OperationalError) else None
        if cannot_open and self.path.is_file() and not os.access(self.path.parent, os.W_OK):
            problem = _READ_ONLY  # SQLite says only that it cannot open the file: it cannot make the WAL's index
        if problem is not None:
            if self._wal.exists():
                problem += " (a WAL file beside it holds another process's writes: it cannot be read as it stands)"
            return StoreError(f"cannot use the SQLite store {self.path}: {problem}")
        if isinstance(exc, OSError) or cannot_open:
            return StoreError(f"cannot open the SQLite store {self.path}: {exc}")
        return StoreError(f"cannot use {self.path} as a SQLite store ({exc}): give another file with --db "
                          "or storage.path, or move this one away")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            # IMMEDIATE takes the write lock up front, so two claimers never both read the same rows.
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if (problem := _write_problem(exc)) is None:
                raise
            raise StoreUnavailableError(f"cannot write to the SQLite store {self.path}: {problem}") from None

    # -- schema and runs ---------------------------------------------------------------
    def init_schema(self) -> None:
        """Create the tables if missing; refuse a schema newer than this code."""
        if self._schema_version() == SCHEMA_VERSION:
            return  # a plain read: most opens find the schema current, and a re-run should stay a read
        self.conn.executescript(read_script(__name__, "schema.sql"))
        with self._write() as c:
            current = self._schema_version()
            if current is None or current < SCHEMA_VERSION:
                # schema.sql only adds (IF NOT EXISTS), so running it brought an older file's tables up to
                # date; columns added to existing tables since are added here.
                for table, column, kind in _ADDED_COLUMNS:
                    if column not in {r[1] for r in c.execute(f"PRAGMA table_info({table})")}:
                        c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                c.execute(Q["record_schema_version"], {"version": SCHEMA_VERSION})
            elif current > SCHEMA_VERSION:
                raise StoreError(f"the store {self.path} has schema version {current}, newer than this "
                                 f"docmill understands ({SCHEMA_VERSION}): upgrade docmill")

    def _schema_version(self) -> int | None:
        """The store's schema version; None before docmill's tables exist (or before one is recorded)."""
        try:
            return self.conn.execute(Q["schema_version"]).fetchone()[0]
        except sqlite3.OperationalError:
            return None  # a new file: no tables yet

    def close(self) -> None:
        """Hand the connection back for this process's next backend on the file (see connections); one
        that reads the file as it stands is closed, so a later writer opens the store afresh."""
        if not self._closed:
            self._closed = True
            if self._as_it_stands:
                self.conn.close()
            else:
                connections.give_back(self.path, self.conn, self._kept)

    def check_connection_budget(self, config: Config, workers: int) -> None:
        """SQLite has no connection limit: every worker on this machine opens the same file."""

    def wait_for_work(self, run_id: str, timeout: float) -> bool:
        """SQLite cannot notify other processes: just wait (the caller polls again)."""
        time.sleep(timeout)
        return False

    def open_run(self, run_id: str, config_json: str, *, rediscover: bool = False) -> RunInfo:
        """Create the run, or reopen a drained one for a new discovery pass."""
        with self._write() as c:
            c.execute(Q["insert_run"], {"run_id": run_id, "config_json": config_json})
            c.execute(Q["reopen_run"], {"run_id": run_id, "rediscover": rediscover})
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> RunInfo | None:
        """The run's row, or None."""
        row = self.conn.execute(Q["get_run"], {"run_id": run_id}).fetchone()
        return run_from_row(row) if row else None

    def list_runs(self) -> list[RunInfo]:
        """Every run, newest first."""
        return [run_from_row(r) for r in self.conn.execute(Q["list_runs"])]

    def acquire_leadership(self, run_id: str, worker_id: str, ttl: float) -> bool:
        """Take or renew the leader lease."""
        with self._write() as c:
            cur = c.execute(Q["acquire_leadership"], {"run_id": run_id, "worker_id": worker_id, "ttl": ttl})
        return cur.rowcount == 1

    def release_leadership(self, run_id: str, worker_id: str) -> None:
        """Give up the leader lease."""
        with self._write() as c:
            c.execute(Q["release_leadership"], {"run_id": run_id, "worker_id": worker_id})

    def finish_discovery(self, run_id: str, generation: int) -> None:
        """Record a finished discovery pass."""
        with self._write() as c:
            c.execute(Q["finish_discovery"], {"run_id": run_id, "generation": generation})

    def request_shutdown(self, run_id: str) -> None:
        """Set the run's shutdown flag."""
        with self._write() as c:
            c.execute(Q["request_shutdown"], {"run_id": run_id})

    # -- discovery -------------------------------------------------------------------
    def upsert_documents(self, run_id: str, refs: Sequence[DocumentRef], generation: int, *,
                         mark_seen: bool = True) -> UpsertCounts:
        """Enqueue new documents and re-enqueue changed ones."""
        if not refs:
            return UpsertCounts()
        source = refs[0].source
        if any(r.source != source for r in refs):
            raise ValueError("upsert_documents takes refs of one source per call")
        # Read before taking the write lock (as PostgreSQL reads at READ COMMITTED): only the leader
        # writes versions, and an unchanged source (a re-run) then needs no lock and no write at all.
        existing = self.stored_versions(run_id, source, [r.key for r in refs])
        if todo := refs_to_write(refs, existing, mark_seen):
            with self._write() as c:
                c.executemany(Q["upsert_document"], [
                    {"run_id": run_id, "source": r.source, "doc_key": r.key, "uri": r.uri, "priority": r.priority,
                     "depth": r.depth, "size": r.size, "version": r.version, "generation": generation}
                    for r in todo])
                if kinds := discovery_kinds(refs, existing):
                    c.execute(Q["discovery_events"], {"run_id": run_id, "source": source,
                                                      "keys": json.dumps(kinds)})
        return count_upserts(refs, existing)

    def stored_versions(self, run_id: str, source: str, keys: Sequence[str]) -> Existing:
        """What the run holds of these keys of one source."""
        existing: Existing = {}
        for part in batched(keys):
            sql = Q["existing_versions"].format(keys=",".join("?" * len(part)))
            existing.update(existing_from_rows(self.conn.execute(sql, (run_id, source, *part))))
        return existing

    def source_versions(self, run_id: str, source: str, limit: int) -> Existing | None:
        """What the run holds of every document of one source, or None beyond ``limit`` documents.

        Kept with the connection while nothing wrote to the store: a no-change re-run in the same
        process reads one row instead of every document's (1,000 of them: ~1 ms of a 7 ms re-run)."""
        return self._kept_read(("source_versions", run_id, source, limit), lambda: within(limit, self.conn.execute(
            Q["source_versions"], {"run_id": run_id, "source": source, "limit": limit + 1})))

    def _kept_read(self, key: tuple[Any, ...], read: Callable[[], _T]) -> _T:
        """``read()``, or what it returned last time for ``key`` if nothing has written to the store since."""
        state = (*self.conn.execute(Q["store_state"]).fetchone(), self.conn.total_changes)
        if (kept := self._kept.reads.get(key)) is not None and kept[0] == state:
            return cast(_T, kept[1])
        value = read()
        self._kept.reads[key] = (state, value)
        return value

    def count_source_documents(self, run_id: str, source: str) -> int:
        """Documents of one source."""
        return self.conn.execute(Q["count_source_documents"], {"run_id": run_id, "source": source}).fetchone()[0]

    def remove_unseen(self, run_id: str, source: str, generation: int) -> list[str]:
        """Delete documents the last discovery pass did not see."""
        params = {"run_id": run_id, "source": source, "generation": generation}
        with self._write() as c:
            rows = c.execute(Q["select_unseen"], params).fetchall()
            if rows:
                c.execute(Q["removed_events"], params)
            c.executemany(Q["delete_document"], [{"id": r[0]} for r in rows])
        return [r[1] for r in rows]

    # -- the queue -------------------------------------------------------------------
    def claim(self, run_id: str, worker_id: str, limit: int, lease_seconds: float,
              max_attempts: int) -> list[ClaimedDocument]:
        """Lease up to ``limit`` runnable documents."""
        with self._write() as c:
            buried = c.execute(Q["bury_exhausted"], {"run_id": run_id, "max_attempts": max_attempts}).fetchall()
            if buried:
                ids = json.dumps([r[0] for r in buried])
                c.execute(Q["lost_events"], {"ids": ids})
                c.execute(Q["buried_events"], {"ids": ids})
            for (doc_id,) in buried:
                c.execute(Q["close_lost_attempts"], {"document_id": doc_id})
            rows = c.execute(Q["claim_documents"], {
                "run_id": run_id, "worker_id": worker_id, "limit": limit, "lease": lease_seconds,
                "token_prefix": new_token_prefix()}).fetchall()
            docs = claimed_documents(rows)
            if retaken := [d.id for d in docs if d.attempts > 1]:
                c.execute(Q["lost_events"], {"ids": json.dumps(retaken)})
            for d in docs:
                if d.attempts > 1:
                    c.execute(Q["close_lost_attempts"], {"document_id": d.id})
                c.execute(Q["insert_attempt"], {"document_id": d.id, "run_id": run_id, "attempt": d.attempts,
                                                "worker_id": worker_id, "lease_token": d.lease_token})
            if docs:
                c.execute(Q["claim_events"], {"ids": json.dumps([d.id for d in docs])})
        docs.sort(key=lambda d: d.id)
        return docs

    def extend_leases(self, lease_tokens: Sequence[str], lease_seconds: float) -> set[str]:
        """Push held leases forward; return the ones still held."""
        if not lease_tokens:
            return set()
        held: set[str] = set()
        with self._write() as c:
            for token in lease_tokens:
                row = c.execute(Q["extend_lease"], {"lease_token": token, "lease": lease_seconds}).fetchone()
                if row:
                    held.add(row[0])
        return held

    def complete(self, doc: ClaimedDocument, result: DocumentResult) -> bool:
        """Replace chunks and mark done, fenced by the lease token, in one transaction."""
        return self.complete_many([(doc, result)])[0]

    def complete_many(self, items: Sequence[tuple[ClaimedDocument, DocumentResult]]) -> list[bool]:
        """Complete several documents in one transaction (one commit), each fenced by its own lease."""
        outcomes = []
        with self._write() as c:
            for doc, result in items:
                outcomes.append(self._complete_one(c, doc, result))
        return outcomes

    def _complete_one(self, c: sqlite3.Connection, doc: ClaimedDocument, result: DocumentResult) -> bool:
        cur = c.execute(Q["mark_done"], done_params(doc.id, doc.lease_token, doc.version, result))
        if cur.rowcount != 1:
            c.execute(Q["finish_attempt"], {"lease_token": doc.lease_token, "outcome": "fenced",
                                            "error_class": "LeaseLost",
                                            "message": "completion rejected: lease lost"})
            self._event(c, "fenced", [doc.lease_token], FENCED_DETAIL)
            return False
        rows = chunk_rows(doc.id, result)
        for row in rows:
            row["embedding"] = to_blob(row["embedding"])
        c.execute(Q["delete_chunks"], {"document_id": doc.id})
        c.executemany(Q["insert_chunk"], rows)
        c.executemany(Q["cache_vector"], [{"model_id": result.model_id, "text_hash": r["text_hash"],
                                           "embedding": r["embedding"]} for r in rows])
        c.execute(Q["finish_attempt"], {"lease_token": doc.lease_token, "outcome": "done",
                                        "error_class": None, "message": None})
        self._event(c, "done", [doc.lease_token], done_detail(result))
        return True

    def complete_unchanged(self, doc: ClaimedDocument) -> bool:
        """Mark an unchanged document done without touching its chunks."""
        with self._write() as c:
            cur = c.execute(Q["mark_unchanged"], {"id": doc.id, "lease_token": doc.lease_token,
                                                  "version": doc.version})
            outcome = "unchanged" if cur.rowcount == 1 else "fenced"
            c.execute(Q["finish_attempt"], {"lease_token": doc.lease_token, "outcome": outcome,
                                            "error_class": None if cur.rowcount == 1 else "LeaseLost",
                                            "message": None})
            self._event(c, outcome, [doc.lease_token],
                        event_detail(content_hash=doc.content_hash) if outcome == "unchanged" else FENCED_DETAIL)
        return cur.rowcount == 1

    def fail(self, doc: ClaimedDocument, error_class: str, message: str, retry_in: float | None) -> bool:
        """Record a failure: retry later, or dead-letter."""
        state = DocState.PENDING if retry_in is not None else DocState.DEAD
        with self._write() as c:
            cur = c.execute(Q["mark_failed"], {"id": doc.id, "lease_token": doc.lease_token, "state": state.value,
                                               "delay": retry_in or 0.0, "message": message,
                                               "error_class": error_class})
            outcome = ("retry" if retry_in is not None else "dead") if cur.rowcount == 1 else "fenced"
            c.execute(Q["finish_attempt"], {"lease_token": doc.lease_token, "outcome": outcome,
                                            "error_class": error_class, "message": message})
            self._event(c, outcome, [doc.lease_token],
                        event_detail(error_class=error_class, message=message, retry_in=retry_in))
        return cur.rowcount == 1

    def release(self, docs: Sequence[ClaimedDocument]) -> int:
        """Give documents back without spending an attempt."""
        released: list[str] = []
        with self._write() as c:
            for d in docs:
                cur = c.execute(Q["mark_released"], {"id": d.id, "lease_token": d.lease_token})
                if cur.rowcount == 1:
                    released.append(d.lease_token)
                    c.execute(Q["finish_attempt"], {"lease_token": d.lease_token, "outcome": "released",
                                                    "error_class": None, "message": None})
            if released:
                self._event(c, "released", released, event_detail(reason="given back unprocessed (stopping)"))
        return len(released)

    def remove_vanished(self, doc: ClaimedDocument, worker_id: str) -> bool:
        """Delete a held document whose file is gone from its source (fenced); False if no longer held."""
        params = {"id": doc.id, "lease_token": doc.lease_token, "worker_id": worker_id}
        with self._write() as c:
            c.execute(Q["vanished_event"], params)
            return c.execute(Q["delete_vanished"], params).rowcount == 1

    def held_by(self, run_id: str, worker_id: str) -> list[ClaimedDocument]:
        """The documents ``worker_id`` holds claimed now."""
        return claimed_documents(self.conn.execute(Q["held_by"], {"run_id": run_id, "worker_id": worker_id}))

    @staticmethod
    def _event(c: sqlite3.Connection, kind: str, tokens: Sequence[str], detail: str) -> None:
        """One event per claim (by lease token), in the caller's transaction."""
        c.execute(Q["attempt_events"], {"kind": kind, "tokens": json.dumps(list(tokens)), "detail": detail})

    def cached_vectors(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors already computed for these chunk texts."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(text_hashes))
        for part in batched(unique):
            sql = Q["cached_vectors"].format(hashes=",".join("?" * len(part)))
            for text_hash, blob in self.conn.execute(sql, (model_id, *part)):
                found[text_hash] = from_blob(blob)
        return found

    # -- workers ---------------------------------------------------------------------
    def register_worker(self, worker_id: str, run_id: str, host: str, pid: int, pid_ns: str) -> None:
        """Record a worker as started."""
        with self._write() as c:
            c.execute(Q["register_worker"], {"worker_id": worker_id, "run_id": run_id, "host": host, "pid": pid,
                                             "pid_ns": pid_ns})

    def local_workers(self, run_id: str, host: str, pid_ns: str) -> list[tuple[str, int]]:
        """(worker id, pid) of the run's unstopped workers on this host and in this PID namespace."""
        rows = self.conn.execute(Q["local_workers"], {"run_id": run_id, "host": host, "pid_ns": pid_ns})
        return [(w, int(p)) for w, p in rows]

    def expire_workers(self, run_id: str, worker_ids: list[str]) -> int:
        """End the claims and leases of workers whose process is gone; how many claims ended."""
        ended = 0
        with self._write() as c:
            for worker_id in worker_ids:
                params = {"run_id": run_id, "worker_id": worker_id}
                c.execute(Q["expire_worker_attempts"], params)
                ended += c.execute(Q["expire_worker_claims"], params).rowcount
                c.execute(Q["expire_worker_leases"], params)
                c.execute(Q["stop_gone_worker"], params)
        return ended

    def beat_worker(self, worker_id: str, current_docs: int, processed: int, failed: int) -> None:
        """Record a heartbeat."""
        with self._write() as c:
            c.execute(Q["beat_worker"], {"worker_id": worker_id, "current_docs": current_docs,
                                         "processed": processed, "failed": failed})

    def stop_worker(self, worker_id: str) -> None:
        """Record a clean exit."""
        with self._write() as c:
            c.execute(Q["stop_worker"], {"worker_id": worker_id})

    # -- finalize --------------------------------------------------------------------
    def counts(self, run_id: str) -> dict[str, int]:
        """Documents by state."""
        counts = {s.value: 0 for s in DocState}
        for state, n in self.conn.execute(Q["counts"], {"run_id": run_id}):
            counts[state] = n
        return counts

    def try_begin_finalize(self, run_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Move a drained run to finalizing; one winner."""
        with self._write() as c:
            cur = c.execute(Q["begin_finalize"], {"run_id": run_id, "worker_id": worker_id,
                                                  "lease": lease_seconds})
        return cur.rowcount == 1

    def extend_finalize(self, run_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Keep the finalize lease alive."""
        with self._write() as c:
            cur = c.execute(Q["extend_finalize"], {"run_id": run_id, "worker_id": worker_id,
                                                   "lease": lease_seconds})
        return cur.rowcount == 1

    def finished_documents(self, run_id: str) -> list[DocumentLinks]:
        """Done documents with their link targets."""
        return [DocumentLinks(id=r[0], source=r[1], key=r[2], uri=r[3], links=json.loads(r[4] or "[]"))
                for r in self.conn.execute(Q["finished_documents"], {"run_id": run_id})]

    def document_vectors(self, run_id: str) -> tuple[list[int], np.ndarray]:
        """Mean chunk vector of each done document."""
        ids: list[int] = []
        sums: list[np.ndarray] = []
        counts: list[int] = []
        for doc_id, blob in self.conn.execute(Q["chunk_vectors_of_run"], {"run_id": run_id}):
            vec = from_blob(blob)
            if ids and ids[-1] == doc_id:
                sums[-1] = sums[-1] + vec
                counts[-1] += 1
            else:
                ids.append(doc_id)
                sums.append(vec.astype(np.float32, copy=True))
                counts.append(1)
        if not ids:
            return [], np.zeros((0, 0), dtype=np.float32)
        matrix = np.vstack(sums) / np.asarray(counts, dtype=np.float32)[:, None]
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        return ids, matrix.astype(np.float32)

    def finalize_fingerprint(self, run_id: str) -> tuple[str, str | None]:
        """The run's done documents' fingerprint now, and the one its relationships came from."""
        current, stored = self.conn.execute(Q["finalize_fingerprint"], {"run_id": run_id}).fetchone()
        return str(current), stored

    def complete_finalize(self, run_id: str, worker_id: str, edges: Sequence[Relationship] | None,
                          fingerprint: str) -> bool:
        """Mark the run complete and store its relationships (None: keep them), if still the finalizer."""
        with self._write() as c:
            cur = c.execute(Q["complete_finalize"], {"run_id": run_id, "worker_id": worker_id})
            if cur.rowcount != 1:
                return False
            c.execute(Q["store_fingerprint"], {"run_id": run_id, "fingerprint": fingerprint})
            if edges is None:
                return True
            c.execute(Q["delete_relationships"], {"run_id": run_id})
            c.executemany(Q["insert_relationship"], [
                {"run_id": run_id, "source_id": e.source_id, "target_id": e.target_id, "kind": e.kind,
                 "score": e.score} for e in edges])
        return True

    # -- reading ---------------------------------------------------------------------
    def _run_filter(self, run_ids: Sequence[str] | None, prefix: str) -> tuple[str, list[str]]:
        if run_ids is None:
            return "", []
        return f"{prefix} d.run_id IN ({','.join('?' * len(run_ids))})", list(run_ids)

    def _all_vectors(self, run_ids: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
        clause, params = self._run_filter(run_ids, "WHERE")
        # The matrix is rebuilt only when chunks changed, so repeated searches stay cheap.
        stamp = (tuple(run_ids or ()), *self.conn.execute("SELECT max(id), count(*) FROM chunks").fetchone())
        if self._kept.vectors and self._kept.vectors[0] == stamp:
            return self._kept.vectors[1], self._kept.vectors[2]
        rows = self.conn.execute(Q["all_vectors"].format(run_filter=clause), params).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        self._kept.vectors = (stamp, ids, matrix)
        return ids, matrix

    def _hits(self, scored: list[tuple[int, float]]) -> list[SearchHit]:
        if not scored:
            return []
        sql = Q["hits_by_id"].format(ids=",".join("?" * len(scored)))
        rows = {r[0]: r for r in self.conn.execute(sql, [cid for cid, _ in scored])}
        return [SearchHit(chunk_id=r[0], document_id=r[1], uri=r[2], title=r[3], heading_path=json.loads(r[4]),
                          page=r[5], ordinal=r[6], char_start=r[7], char_end=r[8], text=r[9], score=score)
                for cid, score in scored if (r := rows.get(cid))]

    def vector_search(self, query: np.ndarray, k: int, run_ids: Sequence[str] | None) -> list[SearchHit]:
        """Brute-force cosine similarity in numpy (vectors are unit-norm, so a dot product)."""
        ids, matrix = self._all_vectors(run_ids)
        if len(ids) == 0:
            return []
        if matrix.shape[1] != query.shape[0]:
            raise StoreError(f"the store holds {matrix.shape[1]}-dimensional vectors but the query has "
                             f"{query.shape[0]}: search with the embedding model used for ingest")
        scores = matrix @ query.astype(np.float32)
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return self._hits([(int(ids[i]), float(scores[i])) for i in top])

    def text_search(self, query: str, k: int, run_ids: Sequence[str] | None) -> list[SearchHit]:
        """BM25 over the FTS5 index."""
        match = fts_query(query)
        if not match:
            return []
        clause, params = self._run_filter(run_ids, "AND")
        sql = Q["text_search"].format(run_filter=clause)
        rows = self.conn.execute(sql, [match, *params, k]).fetchall()
        return self._hits([(r[0], float(r[1])) for r in rows])

    def documents(self, run_id: str | None, state: str | None, limit: int | None,
                  source: str | None = None) -> list[DocumentRow]:
        """Documents, optionally filtered."""
        conditions, params = [], []
        for column, value in (("run_id", run_id), ("state", state), ("source", source)):
            if value:
                conditions.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = Q["documents"].format(where=where, limit=f"LIMIT {int(limit)}" if limit else "")
        return [DocumentRow(id=r[0], run_id=r[1], source=r[2], key=r[3], uri=r[4], state=r[5], attempts=r[6],
                            chunks=r[7], title=r[8], last_error=r[9], error_class=r[10], updated_at=r[11])
                for r in self.conn.execute(sql, params)]

    def chunk_count(self, run_id: str) -> int:
        """Chunks stored for a run (kept like ``source_versions``: 0.3 ms of a no-change re-run of 1,000 files)."""
        return self._kept_read(("chunk_count", run_id), lambda: int(
            self.conn.execute(Q["chunk_count"], {"run_id": run_id}).fetchone()[0]))

    def relationships(self, run_id: str) -> list[Relationship]:
        """The run's edges."""
        return [Relationship(source_id=r[0], target_id=r[1], kind=r[2], score=r[3])
                for r in self.conn.execute(Q["relationships"], {"run_id": run_id})]

    def worker_rows(self, run_id: str) -> list[WorkerRow]:
        """Workers of the run."""
        return [WorkerRow(*r) for r in self.conn.execute(Q["worker_rows"], {"run_id": run_id})]

    def recent_completions(self, run_id: str, window_seconds: float) -> CompletionStats:
        """Count and timing of recent completions."""
        rows = self.conn.execute(Q["recent_durations"], {"run_id": run_id, "window": window_seconds})
        return completion_stats([r[0] for r in rows])

    # -- cluster-wide rate limits (ratelimit.sql) ------------------------------------------
    def rate_acquire(self, key: str, need_requests: float, need_tokens: float, request_rate: float,
                     request_capacity: float, token_rate: float, token_capacity: float) -> RateBucket:
        """Refill the shared bucket and take the need if it is there, in one statement."""
        params = {"key": key, "need_requests": need_requests, "need_tokens": need_tokens,
                  "request_rate": request_rate, "request_capacity": request_capacity,
                  "token_rate": token_rate, "token_capacity": token_capacity}
        with self._write() as c:
            row = c.execute(RL["rate_acquire"], params | {"now": time.time()}).fetchone()
        return RateBucket(bool(row[0]), *map(float, row[1:]))

    def rate_throttled(self, key: str, retry_after: float, decrease: float, min_factor: float) -> None:
        """A 429/503: cut the shared factor and block every worker for ``retry_after`` seconds."""
        with self._write() as c:
            c.execute(RL["rate_throttled"], {"key": key, "retry_after": retry_after, "decrease": decrease,
                                             "min_factor": min_factor, "now": time.time()}).fetchall()

    def rate_succeeded(self, key: str, increase: float) -> None:
        """A successful request: raise the shared factor by ``increase`` (up to 1)."""
        with self._write() as c:
            c.execute(RL["rate_succeeded"], {"key": key, "increase": increase})

    # -- operations ------------------------------------------------------------------
    def schema_version(self) -> int:
        """The schema version the store is at."""
        return self._schema_version() or 0

    def failure_counts(self, run_id: str) -> dict[str, int]:
        """Dead documents by error class."""
        return dict(self.conn.execute(Q["failure_counts"], {"run_id": run_id}).fetchall())

    def claims(self, run_id: str, limit: int | None = None) -> list[ClaimRow]:
        """Documents held now, lapsed first, then by lease expiry."""
        return [ClaimRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], float(r[7]), bool(r[8]))
                for r in self.conn.execute(Q["claims"], {"run_id": run_id, "limit": limit})]

    def recent_errors(self, run_id: str, limit: int) -> list[ErrorRow]:
        """Latest attempts that ended badly."""
        return [ErrorRow(*r) for r in self.conn.execute(Q["recent_errors"], {"run_id": run_id, "limit": limit})]

    def find_document_ids(self, run_id: str, idents: Sequence[str]) -> list[int]:
        """Documents named by id, URI or key; removed ones through their events."""
        params = {"run_id": run_id, "idents": json.dumps(list(idents))}
        found = [r[0] for r in self.conn.execute(Q["find_documents"], params)]
        return found or [r[0] for r in self.conn.execute(Q["find_removed_documents"], params)]

    def document_rows(self, ids: Sequence[int]) -> list[DocumentRow]:
        """Documents by id."""
        return [DocumentRow(*r) for r in self.conn.execute(Q["document_rows"], {"ids": json.dumps(list(ids))})]

    def events(self, document_id: int) -> list[EventRow]:
        """A document's history."""
        return [EventRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "{}"))
                for r in self.conn.execute(Q["events"], {"document_id": document_id})]

    def relationship_count(self, document_id: int) -> int:
        """Edges from or to a document."""
        return int(self.conn.execute(Q["relationship_count"], {"id": document_id}).fetchone()[0])

    def requeue(self, run_id: str, ids: Sequence[int]) -> list[int]:
        """Dead or waiting documents back to pending, attempts reset."""
        params = {"run_id": run_id, "ids": json.dumps([int(i) for i in ids])}
        with self._write() as c:
            c.execute(Q["requeue_events"], params)
            return sorted(r[0] for r in c.execute(Q["requeue"], params).fetchall())

    def purge_dead(self, run_id: str | None, older_than: float) -> int:
        """Delete old dead documents with their chunks."""
        params = {"run_id": run_id, "age": float(older_than)}
        with self._write() as c:
            c.execute(Q["purge_events"], params)
            return c.execute(Q["purge_dead"], params).rowcount

    def reset_claims(self, run_id: str, older_than: float, reason: str) -> int:
        """Release claims held at least ``older_than`` seconds."""
        with self._write() as c:
            tokens = [r[0] for r in c.execute(Q["stuck_claims"], {"run_id": run_id, "age": float(older_than)})]
            if not tokens:
                return 0
            params = {"tokens": json.dumps(tokens), "reason": reason}
            count = c.execute(Q["reset_claims"], params).rowcount
            c.execute(Q["close_reset_attempts"], params)
            self._event(c, "reset", tokens, event_detail(reason=reason))
        return count

    def swap_alert_state(self, run_id: str, dead_count: int) -> int | None:
        """Store this check's dead count; return the previous one."""
        with self._write() as c:
            row = c.execute(Q["get_alert_state"], {"run_id": run_id}).fetchone()
            c.execute(Q["put_alert_state"], {"run_id": run_id, "dead_count": dead_count})
        return int(row[0]) if row else None

    def prune_events(self, older_than: float) -> int:
        """Delete events past the retention, run by run."""
        deleted = 0
        for (run_id,) in self.conn.execute(Q["event_runs"]).fetchall():
            with self._write() as c:
                deleted += c.execute(Q["prune_events"], {"run_id": run_id, "age": float(older_than)}).rowcount
        return deleted

    def cleanup_finished_runs(self, older_than: float) -> dict[str, int]:
        """Drop the queue bookkeeping of long-finished runs (never documents or chunks)."""
        totals = {"runs": 0, "attempts": 0, "events": 0, "workers": 0}
        for (run_id,) in self.conn.execute(Q["finished_runs"], {"age": float(older_than)}).fetchall():
            with self._write() as c:
                totals["runs"] += 1
                for table in ("attempts", "events", "workers"):
                    totals[table] += c.execute(Q[f"cleanup_{table}"], {"run_id": run_id}).rowcount
        return totals

