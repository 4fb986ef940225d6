"""PostgreSQL backend: one database (with pgvector) as the work queue and the store of many machines.

Connections. Each ``PostgresBackend`` object owns exactly one connection (one explicit transaction
per operation, or one statement in its own implicit transaction), so a worker process uses at
most two: its work backend and its heartbeat thread's backend. No pool is needed inside a
process; ``storage.pool_size`` is the connection budget of one machine, checked by
``check_connection_budget`` (2 per worker process); ``pool_timeout`` is the connect timeout and
``pool_recycle`` the age after which a connection is replaced between transactions. A connection
broken by a database restart or a network blip is replaced when an operation meets it, with
backoff, for up to ``storage.reconnect_timeout`` seconds; after that the operation raises
``StoreUnavailableError`` and the worker stops (its documents' leases lapse; a re-run goes on).
Messages name host:port/db, never the password.

Beyond the Protocol: ``wait_for_work`` (LISTEN on ``docmill_<run_id>``), woken by the NOTIFY that
upserts, retries, releases and re-queued completions send.
"""

from __future__ import annotations

import hashlib
import re
import struct
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from importlib import resources
from typing import Any, ClassVar, TypeVar

import numpy as np
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format
from psycopg.types import TypeInfo

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
    chunk_rows,
    claimed_documents,
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
from docmill.config import Config, redact_url
from docmill.errors import ConfigError, StoreError, StoreUnavailableError, TransientError
from docmill.models import DocState, DocumentRef

Q = load_queries(__name__)
RL = load_queries(__name__, "ratelimit.sql")

#: Key of the transaction-level advisory lock that serialises schema creation and migration
#: (any constant works as long as every docmill process uses the same one: b"docmill" as an int).
SCHEMA_LOCK_KEY = 0x646F636D696C6C
#: Connections one worker process opens: its work backend and its heartbeat thread's backend.
CONNECTIONS_PER_WORKER = 2
#: Vector search asks the HNSW index for this many candidates at least (pgvector's ef_search).
MIN_CANDIDATES = 100
#: pgvector's largest ef_search.
MAX_CANDIDATES = 1000

VECTOR_INSTALL_HINT = ("install pgvector (https://github.com/pgvector/pgvector#installation) "
                       "or ask your DBA to run CREATE EXTENSION vector")

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_T = TypeVar("_T")


def missing_vector_message(reason: str | None = None) -> str:
    """The error shown when the ``vector`` extension cannot be created in the database."""
    detail = f" ({reason})" if reason else ""
    return f"the vector extension is not installed in this PostgreSQL: {VECTOR_INSTALL_HINT}{detail}"


def notify_channel(run_id: str) -> str:
    """The LISTEN/NOTIFY channel of a run (identifiers stop at 63 bytes, so long ids are hashed)."""
    channel = f"docmill_{run_id}"
    if len(channel.encode()) <= 63:
        return channel
    return "docmill_" + hashlib.sha256(run_id.encode()).hexdigest()[:40]


def describe_url(url: str) -> str:
    """``host:port/db`` of a PostgreSQL URL, for messages (never the user's password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return redact_url(url)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or 'postgres'}"


def migrations() -> list[tuple[int, str]]:
    """The numbered migration scripts shipped with docmill, in order: [(number, file name)]."""
    folder = resources.files(__name__).joinpath("migrations")
    found = sorted((int(m.group(1)), entry.name) for entry in folder.iterdir()
                   if (m := _MIGRATION_NAME.match(entry.name)))
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise StoreError(f"docmill's PostgreSQL migrations are not numbered 001, 002, …: {numbers}")
    return found


# -- pgvector binary format: int16 dimension, int16 unused, then big-endian float32 values ----------
class _VectorDumper(Dumper):
    """A 1-d numpy array as a pgvector ``vector`` in binary (no text formatting of floats)."""

    format = Format.BINARY

    def dump(self, obj: Any) -> Buffer:
        vec = np.asarray(obj, dtype=">f4").ravel()
        return struct.pack(">HH", vec.shape[0], 0) + vec.tobytes()


class _VectorBinaryLoader(Loader):
    """A pgvector ``vector`` in binary as a float32 numpy array."""

    format = Format.BINARY

    def load(self, data: Buffer) -> np.ndarray:
        dims = struct.unpack_from(">H", data)[0]
        return np.frombuffer(bytes(data), dtype=">f4", count=dims, offset=4).astype(np.float32)


class _VectorTextLoader(Loader):
    """A pgvector ``vector`` in text (``[1,2,3]``) as a float32 numpy array."""

    format = Format.TEXT

    def load(self, data: Buffer) -> np.ndarray:
        text = bytes(data).decode()[1:-1]
        return np.array(text.split(","), dtype=np.float32) if text else np.zeros(0, dtype=np.float32)


def _run_again(_conn: psycopg.Connection[Any]) -> None:
    """``recover`` for reads: whatever a cut-off read did, reading again is the answer."""
    return None


def _wake(c: psycopg.Connection[Any], run_ids: Sequence[str]) -> None:
    """Wake the idle workers of these runs (one NOTIFY per run, in a fixed order)."""
    for run_id in sorted(set(run_ids)):
        c.execute(Q["notify_work"], {"channel": notify_channel(run_id)})


def _stored_versions(c: psycopg.Connection[Any], run_id: str, source: str, keys: Sequence[str]) -> Existing:
    return existing_from_rows(c.execute(Q["existing_versions"],
                                        {"run_id": run_id, "source": source, "keys": list(keys)}))


def _schema_version(c: psycopg.Connection[Any]) -> int | None:
    """The store's schema version; None before docmill's tables exist."""
    if c.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
        return None
    return int(c.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)


def _completion_params(items: Sequence[tuple[ClaimedDocument, DocumentResult]]) -> dict[str, Any]:
    """The column arrays of ``complete_documents``: one entry per document, per chunk, per cached text."""
    done = [done_params(doc.id, doc.lease_token, doc.version, result) for doc, result in items]
    rows = [row for doc, result in items for row in chunk_rows(doc.id, result)]
    cache: dict[tuple[str, str], bytes] = {}
    for _doc, result in items:
        for text_hash, vector in zip(result.text_hashes, result.vectors, strict=True):
            cache.setdefault((result.model_id, text_hash), to_blob(vector))
    keys = sorted(cache)  # one order for every completion: overlapping cache inserts cannot deadlock
    params: dict[str, Any] = {
        name: [d[key] for d in done] for name, key in (
            ("ids", "id"), ("tokens", "lease_token"), ("versions", "version"),
            ("content_hashes", "content_hash"), ("titles", "title"), ("mimes", "mime"),
            ("chunk_counts", "chunk_count"), ("links", "links"), ("metadata", "metadata"))}
    params["details"] = [done_detail(result) for _doc, result in items]
    params.update({name: [r[key] for r in rows] for name, key in (
        ("chunk_documents", "document_id"), ("ordinals", "ordinal"), ("texts", "text"),
        ("heading_paths", "heading_path"), ("pages", "page"), ("char_starts", "char_start"),
        ("char_ends", "char_end"), ("token_counts", "token_count"), ("text_hashes", "text_hash"),
        ("embeddings", "embedding"))})
    params["dims"] = [len(r["embedding"]) for r in rows]
    params.update(cache_models=[k[0] for k in keys], cache_hashes=[k[1] for k in keys],
                  cache_blobs=[cache[k] for k in keys])
    return params


class PostgresBackend:
    """The Backend Protocol on PostgreSQL + pgvector; one connection per object."""

    _vector_type: ClassVar[dict[str, TypeInfo]] = {}  # per database URL: the vector type's oids

    def __init__(self, url: str, config: Config) -> None:
        self.url = url
        self.config = config
        self._where = describe_url(url)
        self._secrets = self._password_forms(url)
        self._connect_timeout = max(2, round(config.storage.pool_timeout))
        self._recycle_after = config.storage.pool_recycle
        #: Seconds to keep reconnecting before an operation gives up.
        self.reconnect_deadline = config.storage.reconnect_timeout
        self._channels: set[str] = set()
        self._hnsw_dims: set[int] = set()
        self._vector_ready = False  # whether this connection knows the vector type
        self.conn: psycopg.Connection[Any] = self._connect()

    # -- connection ------------------------------------------------------------------
    @staticmethod
    def _password_forms(url: str) -> list[str]:
        """The password as it may appear in a message: decoded, and as written in the URL."""
        forms: list[str] = []
        with suppress(psycopg.ProgrammingError):
            password = conninfo_to_dict(url).get("password")
            if password:
                forms.append(str(password))
        match = re.match(r"^[a-z]+://[^:/@]*:([^@]*)@", url)
        if match and match.group(1):
            forms.append(match.group(1))
        return sorted(set(forms), key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        """``text`` with every form of the password replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _connect(self) -> psycopg.Connection[Any]:
        """Open the connection (StoreError naming host:port/db when the database is unreachable)."""
        try:
            # Autocommit: multi-statement operations open their transaction explicitly (_run), and a
            # one-statement operation (the claim) commits in its own single round trip.
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=self._connect_timeout,
                                   application_name="docmill")
            self._setup(conn)
        except psycopg.Error as exc:
            reason = self._scrub(str(exc).strip().replace("\n", " "))
            raise StoreError(f"cannot connect to PostgreSQL at {self._where}: {reason}") from None
        self._connected_at = time.monotonic()
        return conn

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        """Teach a new connection the vector type (when it exists yet) and re-issue its LISTENs."""
        self._vector_ready = False
        info = self._vector_type.get(self.url)
        if info is None:
            info = TypeInfo.fetch(conn, "vector")
            if info is not None:
                self._vector_type[self.url] = info
        for channel in self._channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        if info is None:
            return  # before init_schema created the extension: _vectors() asks again when needed

        class VectorDumper(_VectorDumper):
            pass

        VectorDumper.oid = info.oid
        info.register(conn)  # so that a list of vectors is sent as vector[]
        conn.adapters.register_dumper(np.ndarray, VectorDumper)
        conn.adapters.register_loader(info.oid, _VectorBinaryLoader)
        conn.adapters.register_loader(info.oid, _VectorTextLoader)
        self._vector_ready = True

    def _vectors(self) -> None:
        """Make sure this connection can send and read vectors (it may predate the extension)."""
        if not self._vector_ready:
            self._run(lambda c: None)  # reconnects a broken connection first
            self._setup(self.conn)
            if not self._vector_ready:
                raise StoreError(missing_vector_message("run docmill init-db first"))

    def _reconnect(self, first_error: BaseException, deadline: float) -> None:
        """Replace a broken connection, with capped exponential backoff until ``deadline``
        (time.monotonic), or raise TransientError."""
        with suppress(Exception):
            self.conn.close()
        delay = 0.05
        last: BaseException = first_error
        while True:
            try:
                self.conn = self._connect()
                return
            except StoreError as exc:
                last = exc
            if time.monotonic() + delay > deadline:
                raise StoreUnavailableError(f"lost the connection to PostgreSQL at {self._where} and could not "
                                     f"reconnect within {self.reconnect_deadline:.0f} s: "
                                     f"{self._scrub(str(last))}") from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _run(self, body: Callable[[psycopg.Connection[Any]], _T],
             recover: Callable[[psycopg.Connection[Any]], _T | None] | None = None) -> _T:
        """Run ``body`` in one transaction; reconnect and run it again if the connection broke before
        the commit (nothing was written then). A failure during COMMIT leaves the outcome unknown,
        so it is never retried: it surfaces as TransientError.

        With ``recover``, ``body`` is a single statement that commits on its own (one round trip).
        If the connection breaks while it runs, it may or may not have committed: after the
        reconnect, ``recover`` reports what it did (None: nothing, so it runs again)."""
        deadline = time.monotonic() + self.reconnect_deadline
        if self.conn.closed or time.monotonic() - self._connected_at > self._recycle_after:
            # storage.pool_recycle: replace an old connection between transactions.
            self._reconnect(StoreError("connection closed or recycled"), deadline)
        conflicts = 0
        unknown = False
        while True:
            body_done = False
            try:
                if recover is not None:
                    found = recover(self.conn) if unknown else None
                    return found if found is not None else body(self.conn)
                with self.conn.transaction():
                    result = body(self.conn)
                    body_done = True
                return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                # The transaction was rolled back whole, so running it again is safe.
                conflicts += 1
                if conflicts > 5:
                    raise TransientError(f"PostgreSQL at {self._where}: {self._scrub(str(exc))}") from None
            except psycopg.OperationalError as exc:
                if not self.conn.broken and not self.conn.closed:
                    raise TransientError(f"PostgreSQL at {self._where}: {self._scrub(str(exc))}") from None
                if body_done:
                    with suppress(Exception):
                        self.conn.close()
                    raise TransientError(f"the connection to PostgreSQL at {self._where} broke while "
                                         f"committing; the operation's outcome is unknown") from None
                self._reconnect(exc, deadline)
                unknown = recover is not None

    def _read(self, body: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """A read-only operation: its statements run as they are, one round trip each, with no
        transaction around them; cut off by a broken connection, it simply runs again."""
        return self._run(body, recover=_run_again)

    def close(self) -> None:
        """Close the connection."""
        with suppress(Exception):
            self.conn.close()

    @classmethod
    def check_connection_budget(cls, config: Config, workers: int) -> None:
        """Refuse to start ``workers`` processes when they would open more than ``storage.pool_size``
        connections from this machine (each worker uses CONNECTIONS_PER_WORKER)."""
        needed = workers * CONNECTIONS_PER_WORKER
        if needed > config.storage.pool_size:
            raise ConfigError(
                f"storage.pool_size is {config.storage.pool_size} but workers.max_workers = {workers} worker "
                f"processes need {needed} PostgreSQL connections ({CONNECTIONS_PER_WORKER} each: work + "
                f"heartbeat): raise storage.pool_size to at least {needed} or lower workers.max_workers")

    # -- schema and runs ---------------------------------------------------------------
    def init_schema(self) -> None:
        """Create the schema on an empty database, or apply the missing numbered migrations; refuse a
        schema newer than this code. Safe when many processes call it at once (advisory lock)."""
        # Most opens find the schema current: two plain reads then, no lock and no transaction.
        if self._read(_schema_version) != SCHEMA_VERSION:
            self._migrate()
        if not self._vector_ready:
            self._setup(self.conn)

    def _migrate(self) -> None:
        def body(c: psycopg.Connection[Any]) -> None:
            c.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            self._create_vector_extension(c)
            current = _schema_version(c)
            if current is None:
                c.execute(read_script(__name__, "schema.sql"))
                c.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
                return
            if current > SCHEMA_VERSION:
                raise StoreError(f"the store {redact_url(self.url)} has schema version {current}, newer than "
                                 f"this docmill understands ({SCHEMA_VERSION}): upgrade docmill")
            for number, name in migrations():
                if current < number <= SCHEMA_VERSION:
                    c.execute(read_script(__name__, f"migrations/{name}"))
                    c.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))

        try:
            self._run(body)
        except pg_errors.InsufficientPrivilege as exc:
            reason = self._scrub(str(exc).strip().splitlines()[0])
            raise StoreError(f"cannot create docmill's tables in PostgreSQL at {self._where}: {reason}: "
                             f"run docmill init-db once as the database owner, or ask your DBA to grant "
                             f"CREATE on the schema") from None

    def _create_vector_extension(self, c: psycopg.Connection[Any]) -> None:
        if c.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            return  # creating it again needs privileges a plain user may lack
        try:
            with c.transaction():  # a savepoint, so the error can be reported cleanly
                c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except (pg_errors.FeatureNotSupported, pg_errors.UndefinedFile, pg_errors.InsufficientPrivilege,
                pg_errors.UndefinedObject) as exc:
            raise StoreError(missing_vector_message(str(exc).strip().splitlines()[0])) from None

    def open_run(self, run_id: str, config_json: str, *, rediscover: bool = False) -> RunInfo:
        """Create the run, or reopen a drained one for a new discovery pass; join an ingesting one."""

        def body(c: psycopg.Connection[Any]) -> RunInfo:
            c.execute(Q["insert_run"], {"run_id": run_id, "config_json": config_json})
            c.execute(Q["reopen_run"], {"run_id": run_id, "rediscover": rediscover})
            return run_from_row(c.execute(Q["get_run"], {"run_id": run_id}).fetchone())

        return self._run(body)

    def get_run(self, run_id: str) -> RunInfo | None:
        """The run's row, or None."""
        row = self._read(lambda c: c.execute(Q["get_run"], {"run_id": run_id}).fetchone())
        return run_from_row(row) if row else None

    def list_runs(self) -> list[RunInfo]:
        """Every run, newest first."""
        return [run_from_row(r) for r in self._read(lambda c: c.execute(Q["list_runs"]).fetchall())]

    def _rowcount(self, query: str, params: dict[str, Any]) -> int:
        """Run one statement in its own transaction; the number of rows it changed."""
        return self._run(lambda c: c.execute(query, params).rowcount)

    def acquire_leadership(self, run_id: str, worker_id: str, ttl: float) -> bool:
        """Take or renew the run's leader lease; False when another live worker holds it."""
        return self._rowcount(Q["acquire_leadership"], {"run_id": run_id, "worker_id": worker_id,
                                                        "ttl": float(ttl)}) == 1

    def release_leadership(self, run_id: str, worker_id: str) -> None:
        """Give up the leader lease so another worker need not wait for it to lapse."""
        self._rowcount(Q["release_leadership"], {"run_id": run_id, "worker_id": worker_id})

    def finish_discovery(self, run_id: str, generation: int) -> None:
        """Record that discovery pass ``generation`` enqueued everything it found."""
        self._rowcount(Q["finish_discovery"], {"run_id": run_id, "generation": generation})

    def request_shutdown(self, run_id: str) -> None:
        """Ask every worker of the run, on every machine, to stop after its current documents."""
        self._rowcount(Q["request_shutdown"], {"run_id": run_id})

    # -- discovery -------------------------------------------------------------------
    def upsert_documents(self, run_id: str, refs: Sequence[DocumentRef], generation: int, *,
                         mark_seen: bool = True) -> UpsertCounts:
        """Enqueue new documents and re-enqueue changed ones; idempotent. Wakes idle workers."""
        if not refs:
            return UpsertCounts()
        source = refs[0].source
        if any(r.source != source for r in refs):
            raise ValueError("upsert_documents takes refs of one source per call")
        # One INSERT cannot touch a row twice, so a key listed twice becomes one row: the last
        # listing's uri/size/version and the first one's priority/depth (as SQLite's row-by-row upsert).
        rows: dict[str, DocumentRef] = {}
        for ref in refs:
            first = rows.get(ref.key)
            rows[ref.key] = ref if first is None else DocumentRef(
                source=ref.source, key=ref.key, uri=ref.uri, size=ref.size, version=ref.version,
                depth=first.depth, priority=first.priority)
        unique = list(rows.values())
        keys = [r.key for r in unique]

        def body(c: psycopg.Connection[Any]) -> UpsertCounts:
            existing = _stored_versions(c, run_id, source, keys)
            if todo := refs_to_write(unique, existing, mark_seen):
                c.execute(Q["upsert_documents"], {
                    "run_id": run_id, "source": source, "generation": generation, "keys": [r.key for r in todo],
                    "uris": [r.uri for r in todo], "priorities": [r.priority for r in todo],
                    "depths": [r.depth for r in todo], "sizes": [r.size for r in todo],
                    "versions": [r.version for r in todo]})
            counts = count_upserts(refs, existing)
            if kinds := discovery_kinds(unique, existing):
                c.execute(Q["discovery_events"], {"run_id": run_id, "source": source,
                                                  "keys": [k for k, _ in kinds], "kinds": [v for _, v in kinds]})
            if counts.new or counts.changed:
                _wake(c, [run_id])
            return counts

        return self._run(body)

    def stored_versions(self, run_id: str, source: str, keys: Sequence[str]) -> Existing:
        """What the run holds of these keys of one source."""
        return self._read(lambda c: _stored_versions(c, run_id, source, keys))

    def source_versions(self, run_id: str, source: str, limit: int) -> Existing | None:
        """What the run holds of every document of one source, or None beyond ``limit`` documents."""
        return self._read(lambda c: within(limit, c.execute(
            Q["source_versions"], {"run_id": run_id, "source": source, "limit": limit + 1})))

    def count_source_documents(self, run_id: str, source: str) -> int:
        """Documents the run holds for one source (to guard against an emptied source root)."""
        return self._read(lambda c: c.execute(Q["count_source_documents"],
                                              {"run_id": run_id, "source": source}).fetchone()[0])

    def remove_unseen(self, run_id: str, source: str, generation: int) -> list[str]:
        """Delete documents (and their chunks) that discovery pass ``generation`` did not see."""
        params = {"run_id": run_id, "source": source, "generation": generation}
        return self._run(lambda c: [r[0] for r in c.execute(Q["remove_unseen"], params)])

    # -- the queue -------------------------------------------------------------------
    def claim(self, run_id: str, worker_id: str, limit: int, lease_seconds: float,
              max_attempts: int) -> list[ClaimedDocument]:
        """Lease up to ``limit`` runnable documents; dead-letter expired ones out of attempts.
        One statement and one round trip; after a broken connection, the claim's token prefix
        tells whether it committed (its documents are then ours), so none is stranded."""
        params = {"run_id": run_id, "worker_id": worker_id, "limit": limit, "lease": float(lease_seconds),
                  "max_attempts": max_attempts, "token_prefix": new_token_prefix()}

        def claimed(c: psycopg.Connection[Any]) -> list[ClaimedDocument]:
            return claimed_documents(c.execute(Q["claim_documents"], params).fetchall())

        def recover(c: psycopg.Connection[Any]) -> list[ClaimedDocument] | None:
            return claimed_documents(c.execute(Q["claims_of_prefix"], params).fetchall()) or None

        docs = self._run(claimed, recover=recover)
        docs.sort(key=lambda d: d.id)
        return docs

    def extend_leases(self, lease_tokens: Sequence[str], lease_seconds: float) -> set[str]:
        """Push the leases forward; returns the tokens still held (a lost one is absent)."""
        if not lease_tokens:
            return set()
        params = {"tokens": list(lease_tokens), "lease": float(lease_seconds)}
        return self._run(lambda c: {r[0] for r in c.execute(Q["extend_leases"], params)})

    def _ensure_hnsw_index(self, dims: int) -> None:
        """Create the HNSW index of vectors of ``dims`` dimensions the first time such vectors are
        stored. Checked in the catalog first: CREATE INDEX, even IF NOT EXISTS, locks out writers."""
        if dims in self._hnsw_dims:
            return
        if not 1 <= dims <= 2000:
            raise StoreError(f"cannot index {dims}-dimensional vectors: "
                             f"pgvector's HNSW index takes 1 to 2000 dimensions")
        name = f"chunks_hnsw_{dims}"

        def body(c: psycopg.Connection[Any]) -> None:
            if c.execute(Q["hnsw_index_exists"], {"name": name}).fetchone():
                return
            # The schema lock also serialises index creation: concurrent CREATE INDEX IF NOT EXISTS
            # of one name can fail with a unique violation in the catalog.
            c.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            c.execute(Q["create_hnsw_index"].format(dims=int(dims)))

        self._run(body)
        self._hnsw_dims.add(dims)

    def complete(self, doc: ClaimedDocument, result: DocumentResult) -> bool:
        """Replace the document's chunks and mark it done, in one fenced transaction."""
        return self.complete_many([(doc, result)])[0]

    def complete_many(self, items: Sequence[tuple[ClaimedDocument, DocumentResult]]) -> list[bool]:
        """Complete several documents in one statement (one round trip, one commit), each fenced by
        its own lease. Returns, per document, False when it was fenced. After a connection cut
        mid-statement, the attempts it would have closed tell whether it committed."""
        if not items:
            return []
        docs = [doc for doc, _result in items]
        params = _completion_params(items)
        dims = {int(result.vectors.shape[1]) for _doc, result in items if result.chunks}
        if dims:
            self._vectors()
        for d in sorted(dims):
            self._ensure_hnsw_index(d)

        def body(c: psycopg.Connection[Any]) -> list[bool]:
            states = [row[1] for row in c.execute(Q["complete_documents"], params)]
            if DocState.PENDING in states:  # a newer version arrived meanwhile: wake a worker for it
                _wake(c, [d.run_id for d in docs])
            return [state is not None for state in states]

        def recover(c: psycopg.Connection[Any]) -> list[bool] | None:
            outcome = dict(c.execute(Q["completions_of_tokens"], {"tokens": params["tokens"]}).fetchall())
            if not any(outcome.get(t) in ("done", "fenced") for t in params["tokens"]):
                return None  # it did not commit: complete again
            _wake(c, [d.run_id for d in docs])  # its state changes may have been missed: wake idle workers
            return [outcome.get(t) == "done" for t in params["tokens"]]

        return self._run(body, recover=recover)

    def complete_unchanged(self, doc: ClaimedDocument) -> bool:
        """Mark a document whose content hash did not change as done; its chunks stay."""

        def body(c: psycopg.Connection[Any]) -> bool:
            done = c.execute(Q["mark_unchanged"], {"id": doc.id, "lease_token": doc.lease_token,
                                                   "version": doc.version}).fetchone()
            c.execute(Q["finish_attempt"], {"lease_token": doc.lease_token,
                                            "outcome": "unchanged" if done else "fenced",
                                            "error_class": None if done else "LeaseLost", "message": None,
                                            "detail": event_detail(content_hash=doc.content_hash) if done
                                            else FENCED_DETAIL})
            if done and done[0] == DocState.PENDING:
                _wake(c, [doc.run_id])
            return done is not None

        return self._run(body)

    def fail(self, doc: ClaimedDocument, error_class: str, message: str, retry_in: float | None) -> bool:
        """Record an attempt's error; ``retry_in`` seconds → back to pending, None → dead-letter."""
        state = DocState.PENDING if retry_in is not None else DocState.DEAD

        def body(c: psycopg.Connection[Any]) -> bool:
            cur = c.execute(Q["mark_failed"], {
                "id": doc.id, "lease_token": doc.lease_token, "state": state.value,
                "delay": float(retry_in or 0.0), "message": message, "error_class": error_class})
            changed = cur.rowcount == 1
            outcome = ("retry" if retry_in is not None else "dead") if changed else "fenced"
            c.execute(Q["finish_attempt"], {"lease_token": doc.lease_token, "outcome": outcome,
                                            "error_class": error_class, "message": message,
                                            "detail": event_detail(error_class=error_class, message=message,
                                                                   retry_in=retry_in)})
            if changed and retry_in is not None:
                _wake(c, [doc.run_id])
            return changed

        return self._run(body)

    def release(self, docs: Sequence[ClaimedDocument]) -> int:
        """Give documents back without spending an attempt (graceful shutdown). Wakes idle workers."""
        if not docs:
            return 0

        def body(c: psycopg.Connection[Any]) -> int:
            tokens = [r[0] for r in c.execute(Q["mark_released"], {
                "ids": [d.id for d in docs], "tokens": [d.lease_token for d in docs]})]
            if tokens:
                c.execute(Q["finish_released_attempts"], {"tokens": tokens})
                held = set(tokens)
                _wake(c, [d.run_id for d in docs if d.lease_token in held])
            return len(tokens)

        return self._run(body)

    def remove_vanished(self, doc: ClaimedDocument, worker_id: str) -> bool:
        """Delete a held document whose file is gone from its source (fenced); False if no longer held."""
        params = {"id": doc.id, "lease_token": doc.lease_token, "worker_id": worker_id}
        return bool(self._run(lambda c: c.execute(Q["remove_vanished"], params).fetchone()[0]))

    def held_by(self, run_id: str, worker_id: str) -> list[ClaimedDocument]:
        """The documents ``worker_id`` holds claimed now."""
        params = {"run_id": run_id, "worker_id": worker_id}
        return self._read(lambda c: claimed_documents(c.execute(Q["held_by"], params).fetchall()))

    def cached_vectors(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors already computed for these chunk texts with this model."""
        if not text_hashes:
            return {}
        params = {"model_id": model_id, "hashes": list(dict.fromkeys(text_hashes))}
        rows = self._read(lambda c: c.execute(Q["cached_vectors"], params).fetchall())
        return {h: from_blob(bytes(blob)) for h, blob in rows}

    def wait_for_work(self, run_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a NOTIFY that the run has new or returned documents
        (beyond the Protocol: PostgreSQL only). True when notified, False on timeout."""
        channel = notify_channel(run_id)
        if channel not in self._channels:
            self._run(lambda c: c.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel))))
            self._channels.add(channel)
        notified = False
        try:
            # Notifications that arrived during earlier operations wait in psycopg's backlog and
            # come out first, so a wake-up between a claim and this call is not lost.
            for note in self.conn.notifies(timeout=max(0.0, timeout), stop_after=1):
                notified = notified or note.channel == channel
        except psycopg.Error:
            # The connection broke while idle (database restart): the next operation reconnects.
            return False
        return notified

    # -- workers ---------------------------------------------------------------------
    def register_worker(self, worker_id: str, run_id: str, host: str, pid: int, pid_ns: str) -> None:
        """Record a worker process as started."""
        self._rowcount(Q["register_worker"], {"worker_id": worker_id, "run_id": run_id, "host": host,
                                              "pid": pid, "pid_ns": pid_ns})

    def local_workers(self, run_id: str, host: str, pid_ns: str) -> list[tuple[str, int]]:
        """(worker id, pid) of the run's unstopped workers on this host and in this PID namespace."""
        params = {"run_id": run_id, "host": host, "pid_ns": pid_ns}
        return [(w, int(p)) for w, p in self._read(lambda c: c.execute(Q["local_workers"], params).fetchall())]

    def expire_workers(self, run_id: str, worker_ids: list[str]) -> int:
        """End the claims and leases of workers whose process is gone; how many claims ended."""
        params = {"run_id": run_id, "worker_ids": worker_ids}
        return int(self._run(lambda c: c.execute(Q["expire_workers"], params).fetchone()[0]))

    def beat_worker(self, worker_id: str, current_docs: int, processed: int, failed: int) -> None:
        """Record the worker's heartbeat and counters."""
        self._rowcount(Q["beat_worker"], {"worker_id": worker_id, "current_docs": current_docs,
                                          "processed": processed, "failed": failed})

    def stop_worker(self, worker_id: str) -> None:
        """Record a clean exit."""
        self._rowcount(Q["stop_worker"], {"worker_id": worker_id})

    # -- finalize --------------------------------------------------------------------
    def counts(self, run_id: str) -> dict[str, int]:
        """Documents of the run by state (every state present, zeros included)."""
        counts = {s.value: 0 for s in DocState}
        for state, n in self._read(lambda c: c.execute(Q["counts"], {"run_id": run_id}).fetchall()):
            counts[state] = n
        return counts

    def try_begin_finalize(self, run_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Move a drained run to finalizing; exactly one caller wins."""
        return self._rowcount(Q["begin_finalize"], {"run_id": run_id, "worker_id": worker_id,
                                                    "lease": float(lease_seconds)}) == 1

    def extend_finalize(self, run_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Keep the finalize lease of a long relationship computation alive."""
        return self._rowcount(Q["extend_finalize"], {"run_id": run_id, "worker_id": worker_id,
                                                     "lease": float(lease_seconds)}) == 1

    def finished_documents(self, run_id: str) -> list[DocumentLinks]:
        """Done documents with their link targets."""
        rows = self._read(lambda c: c.execute(Q["finished_documents"], {"run_id": run_id}).fetchall())
        return [DocumentLinks(id=r[0], source=r[1], key=r[2], uri=r[3], links=list(r[4] or [])) for r in rows]

    def document_vectors(self, run_id: str) -> tuple[list[int], np.ndarray]:
        """Mean chunk vector of every done document with chunks (ids, unit-norm matrix)."""
        self._vectors()

        def body(c: psycopg.Connection[Any]) -> list[tuple[int, np.ndarray]]:
            with c.cursor(binary=True) as cur:
                return cur.execute(Q["document_vectors"], {"run_id": run_id}).fetchall()

        rows = self._read(body)
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        matrix = np.vstack([r[1] for r in rows]).astype(np.float32)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        return [int(r[0]) for r in rows], matrix

    def finalize_fingerprint(self, run_id: str) -> tuple[str, str | None]:
        """The run's done documents' fingerprint now, and the one its relationships came from."""
        current, stored = self._read(lambda c: c.execute(Q["finalize_fingerprint"], {"run_id": run_id}).fetchone())
        return str(current), stored

    def complete_finalize(self, run_id: str, worker_id: str, edges: Sequence[Relationship] | None,
                          fingerprint: str) -> bool:
        """Mark the run complete and store its relationships (None: keep them), if this worker still
        holds finalize."""

        def body(c: psycopg.Connection[Any]) -> bool:
            if c.execute(Q["complete_finalize"], {"run_id": run_id, "worker_id": worker_id}).rowcount != 1:
                return False
            c.execute(Q["store_fingerprint"], {"run_id": run_id, "fingerprint": fingerprint})
            if edges is None:
                return True
            c.execute(Q["delete_relationships"], {"run_id": run_id})
            if edges:
                c.execute(Q["insert_relationships"], {
                    "run_id": run_id, "sources": [e.source_id for e in edges],
                    "targets": [e.target_id for e in edges], "kinds": [e.kind for e in edges],
                    "scores": [float(e.score) for e in edges]})
            return True

        return self._run(body)

    # -- reading ---------------------------------------------------------------------
    @staticmethod
    def _hits(rows: Sequence[Sequence[Any]]) -> list[SearchHit]:
        """Search result rows (chunk columns then score) as SearchHits."""
        return [SearchHit(chunk_id=r[0], document_id=r[1], uri=r[2], title=r[3], heading_path=list(r[4]),
                          page=r[5], ordinal=r[6], char_start=r[7], char_end=r[8], text=r[9],
                          score=float(r[10])) for r in rows]

    def vector_search(self, query: np.ndarray, k: int, run_ids: Sequence[str] | None) -> list[SearchHit]:
        """Top ``k`` chunks by cosine similarity, through the HNSW index of the query's dimension."""
        if k <= 0:
            return []
        self._vectors()
        dims = int(query.shape[0])
        vec = np.asarray(query, dtype=np.float32)
        candidates = min(max(MIN_CANDIDATES, 2 * k), MAX_CANDIDATES)
        params: dict[str, Any] = {"query": vec, "k": k, "candidates": candidates}
        if run_ids is not None:
            params["run_ids"] = list(run_ids)

        def body(c: psycopg.Connection[Any]) -> list[Any]:
            c.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(candidates)))
            run_filter = "d.run_id = ANY(%(run_ids)s::text[])" if run_ids is not None else ""
            text = Q["vector_search"].format(dims=dims,
                                             run_filter=f"WHERE {run_filter}" if run_filter else "")
            rows = c.execute(text, params).fetchall()
            if len(rows) < k:
                # The run filter threw away too many of the index's candidates (or the approximate
                # graph walk came back short): rank exactly, without the index.
                exact = Q["vector_search_exact"].format(
                    dims=dims, run_filter=f"AND {run_filter}" if run_filter else "")
                rows = c.execute(exact, params).fetchall()
            if not rows:
                stored = sorted(r[0] for r in c.execute(Q["store_dimensions"]))
                if stored and dims not in stored:
                    raise StoreError(
                        f"the store holds {'/'.join(map(str, stored))}-dimensional vectors but the query has "
                        f"{dims}: search with the embedding model used for ingest")
            return rows

        return self._hits(self._run(body))  # a transaction: SET LOCAL lasts until its end

    def text_search(self, query: str, k: int, run_ids: Sequence[str] | None) -> list[SearchHit]:
        """Top ``k`` chunks by full-text rank (any of the question's words, ranked by ts_rank_cd)."""
        match = fts_query(query)  # '"w1" OR "w2"': websearch_to_tsquery reads it as w1 | w2
        if not match or k <= 0:
            return []
        params: dict[str, Any] = {"query": match, "k": k}
        run_filter = ""
        if run_ids is not None:
            params["run_ids"] = list(run_ids)
            run_filter = "AND d.run_id = ANY(%(run_ids)s::text[])"
        text = Q["text_search"].format(run_filter=run_filter)
        return self._hits(self._read(lambda c: c.execute(text, params).fetchall()))

    def documents(self, run_id: str | None, state: str | None, limit: int | None,
                  source: str | None = None) -> list[DocumentRow]:
        """Documents, optionally of one run, one state and one source."""
        conditions: list[str] = []
        params: dict[str, Any] = {}
        for column, value in (("run_id", run_id), ("state", state), ("source", source)):
            if value:
                conditions.append(f"{column} = %({column})s")
                params[column] = value
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        text = Q["documents"].format(where=where, limit=f"LIMIT {int(limit)}" if limit else "")
        rows = self._read(lambda c: c.execute(text, params).fetchall())
        return [DocumentRow(id=r[0], run_id=r[1], source=r[2], key=r[3], uri=r[4], state=r[5], attempts=r[6],
                            chunks=r[7], title=r[8], last_error=r[9], error_class=r[10], updated_at=r[11])
                for r in rows]

    def chunk_count(self, run_id: str) -> int:
        """Chunks stored for the run's documents."""
        return self._read(lambda c: c.execute(Q["chunk_count"], {"run_id": run_id}).fetchone()[0])

    def relationships(self, run_id: str) -> list[Relationship]:
        """Edges computed by the run's last finalize."""
        rows = self._read(lambda c: c.execute(Q["relationships"], {"run_id": run_id}).fetchall())
        return [Relationship(source_id=r[0], target_id=r[1], kind=r[2], score=r[3]) for r in rows]

    # -- cluster-wide rate limits (ratelimit.sql) ------------------------------------------
    def rate_acquire(self, key: str, need_requests: float, need_tokens: float, request_rate: float,
                     request_capacity: float, token_rate: float, token_capacity: float) -> RateBucket:
        """Refill the shared bucket and take the need if it is there, in one statement (row lock)."""
        params = {"key": key, "need_requests": need_requests, "need_tokens": need_tokens,
                  "request_rate": request_rate, "request_capacity": request_capacity,
                  "token_rate": token_rate, "token_capacity": token_capacity}
        row = self._run(lambda c: c.execute(RL["rate_acquire"], params).fetchone())
        return RateBucket(bool(row[0]), *map(float, row[1:]))

    def rate_throttled(self, key: str, retry_after: float, decrease: float, min_factor: float) -> None:
        """A 429/503: cut the shared factor and block every worker for ``retry_after`` seconds."""
        self._rowcount(RL["rate_throttled"], {"key": key, "retry_after": retry_after, "decrease": decrease,
                                              "min_factor": min_factor})

    def rate_succeeded(self, key: str, increase: float) -> None:
        """A successful request: raise the shared factor by ``increase`` (up to 1)."""
        self._rowcount(RL["rate_succeeded"], {"key": key, "increase": increase})

    # -- operations ------------------------------------------------------------------
    def worker_rows(self, run_id: str) -> list[WorkerRow]:
        """Workers that ever joined the run, newest first."""
        rows = self._read(lambda c: c.execute(Q["worker_rows"], {"run_id": run_id}).fetchall())
        return [WorkerRow(*r) for r in rows]

    def recent_completions(self, run_id: str, window_seconds: float) -> CompletionStats:
        """Attempts that finished done or unchanged in the last ``window_seconds`` (aggregated in SQL)."""
        params = {"run_id": run_id, "window": float(window_seconds)}
        count, avg, p95 = self._read(lambda c: c.execute(Q["recent_completions"], params).fetchone())
        return CompletionStats(int(count), float(avg) if avg is not None else None,
                               float(p95) if p95 is not None else None)

    def schema_version(self) -> int:
        """The schema version the store is at (0 before init-db)."""

        def body(c: psycopg.Connection[Any]) -> int:
            if c.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
                return 0
            return int(c.execute(Q["schema_version"]).fetchone()[0] or 0)

        return self._read(body)

    def failure_counts(self, run_id: str) -> dict[str, int]:
        """Dead documents of the run by error class."""
        return dict(self._read(lambda c: c.execute(Q["failure_counts"], {"run_id": run_id}).fetchall()))

    def claims(self, run_id: str, limit: int | None = None) -> list[ClaimRow]:
        """Documents of the run held under a lease now, lapsed first, then by lease expiry."""
        rows = self._read(lambda c: c.execute(Q["claims"], {"run_id": run_id, "limit": limit}).fetchall())
        return [ClaimRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], float(r[7]), bool(r[8])) for r in rows]

    def recent_errors(self, run_id: str, limit: int) -> list[ErrorRow]:
        """The run's latest attempts that ended in retry, dead, lost or fenced (last hour)."""
        params = {"run_id": run_id, "limit": limit}
        return [ErrorRow(*r) for r in self._read(lambda c: c.execute(Q["recent_errors"], params).fetchall())]

    def find_document_ids(self, run_id: str, idents: Sequence[str]) -> list[int]:
        """Ids of the run's documents named by id, URI or key, including removed ones (from events)."""
        params = {"run_id": run_id, "idents": list(idents)}

        def body(c: psycopg.Connection[Any]) -> list[int]:
            found = [r[0] for r in c.execute(Q["find_documents"], params)]
            return found or [r[0] for r in c.execute(Q["find_removed_documents"], params)]

        return self._read(body)

    def document_rows(self, ids: Sequence[int]) -> list[DocumentRow]:
        """The documents with these ids that still exist."""
        params = {"ids": [int(i) for i in ids]}
        return [DocumentRow(*r) for r in self._read(lambda c: c.execute(Q["document_rows"], params).fetchall())]

    def events(self, document_id: int) -> list[EventRow]:
        """A document's history, oldest first."""
        rows = self._read(lambda c: c.execute(Q["events"], {"document_id": document_id}).fetchall())
        return [EventRow(r[0], r[1], r[2], r[3], r[4], r[5], dict(r[6] or {})) for r in rows]

    def relationship_count(self, document_id: int) -> int:
        """Edges from or to a document."""
        return int(self._read(lambda c: c.execute(Q["relationship_count"], {"id": document_id}).fetchone()[0]))

    def requeue(self, run_id: str, ids: Sequence[int]) -> list[int]:
        """Dead (or waiting) documents back to pending now with attempts reset; history kept."""
        params = {"run_id": run_id, "ids": [int(i) for i in ids]}

        def body(c: psycopg.Connection[Any]) -> list[int]:
            moved = [r[0] for r in c.execute(Q["requeue"], params)]
            if moved:
                _wake(c, [run_id])
            return moved

        return self._run(body)

    def purge_dead(self, run_id: str | None, older_than: float) -> int:
        """Delete dead documents (and chunks) unchanged for ``older_than`` seconds."""
        params = {"run_id": run_id, "age": float(older_than)}
        return int(self._run(lambda c: c.execute(Q["purge_dead"], params).fetchone()[0]))

    def reset_claims(self, run_id: str, older_than: float, reason: str) -> int:
        """Release claims held for at least ``older_than`` seconds (0: all) without spending an attempt."""
        params = {"run_id": run_id, "age": float(older_than), "reason": reason}

        def body(c: psycopg.Connection[Any]) -> int:
            count = c.execute(Q["reset_claims"], params).rowcount
            if count:
                _wake(c, [run_id])
            return count

        return self._run(body)

    def swap_alert_state(self, run_id: str, dead_count: int) -> int | None:
        """Store the dead count seen by this alert check; return the previous check's, or None."""
        params = {"run_id": run_id, "dead_count": dead_count}
        previous = self._run(lambda c: c.execute(Q["swap_alert_state"], params).fetchone()[0])
        return int(previous) if previous is not None else None

    def prune_events(self, older_than: float) -> int:
        """Delete events older than ``older_than`` seconds, run by run (one short transaction each)."""
        runs = [r[0] for r in self._read(lambda c: c.execute(Q["event_runs"]).fetchall())]
        return sum(self._rowcount(Q["prune_events"], {"run_id": run_id, "age": float(older_than)})
                   for run_id in runs)

    def cleanup_finished_runs(self, older_than: float) -> dict[str, int]:
        """Drop attempts, events and worker rows of runs complete for ``older_than`` seconds."""
        totals = {"runs": 0, "attempts": 0, "events": 0, "workers": 0}
        finished = self._read(lambda c: c.execute(Q["finished_runs"], {"age": float(older_than)}).fetchall())
        for (run_id,) in finished:

            def body(c: psycopg.Connection[Any], run_id: str = run_id) -> dict[str, int]:
                return {t: c.execute(Q[f"cleanup_{t}"], {"run_id": run_id}).rowcount
                        for t in ("attempts", "events", "workers")}

            for table, n in self._run(body).items():
                totals[table] += n
            totals["runs"] += 1
        return totals

