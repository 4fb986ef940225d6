"""The storage Protocol: the work queue, the document registry and the chunk store in one.

Both backends (SQLite for one machine, PostgreSQL for many) implement it with the same
behaviour, checked by one parametrised test suite. A backend object owns one connection;
a thread that needs its own connection (the heartbeat) opens its own backend object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from docmill.config import Config
from docmill.models import Chunk, DocumentRef

SCHEMA_VERSION = 5  # 2: the events and alert_state tables (operations); 3: rate_limits (throughput);
#                     4: finalized_inputs (finalize skips unchanged relationships); 5: workers.pid_ns


#: The longest document key (a path inside its source) a store takes, in UTF-8 bytes: a PostgreSQL
#: btree entry holds at most 2,704 bytes, and (run, source, key) is the registry's unique index.
#: Both backends apply it, so they behave the same.
MAX_KEY_BYTES = 2000

#: What an upsert compares a discovered ref with: {key: (version, state, uri)} as stored.
Existing = dict[str, tuple[str | None, str, str]]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run: a configuration's documents, its leader, and whether it has drained."""

    run_id: str
    state: str
    discovery_gen: int  # discovery passes requested
    discovered_gen: int  # discovery passes finished
    leader_id: str | None
    leader_expires_at: float | None
    shutdown_requested: bool
    finalize_count: int
    created_at: float
    updated_at: float
    config_json: str


@dataclass(frozen=True, slots=True)
class ClaimedDocument:
    """A document this worker holds under a lease; every write about it quotes the lease token."""

    id: int
    run_id: str
    source: str
    key: str
    uri: str
    attempts: int
    lease_token: str
    version: str | None
    content_hash: str | None  # hash of the last version stored, to skip unchanged content
    depth: int


@dataclass(slots=True)
class DocumentResult:
    """What processing a document produced, written atomically by ``complete``."""

    content_hash: str
    title: str | None
    mime: str
    chunks: list[Chunk]
    vectors: np.ndarray  # (len(chunks), dim) float32
    text_hashes: list[str]
    model_id: str
    links: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """How a batch of discovered documents compared with what the run already had."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One chunk found by a search, with where it comes from."""

    chunk_id: int
    document_id: int
    uri: str
    title: str | None
    heading_path: list[str]
    page: int | None
    ordinal: int
    char_start: int
    char_end: int
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class DocumentRow:
    """One row of ``docmill documents``."""

    id: int
    run_id: str
    source: str
    key: str
    uri: str
    state: str
    attempts: int
    chunks: int
    title: str | None
    last_error: str | None
    error_class: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class DocumentLinks:
    """A finished document's identity, raw link targets and mean vector, for relationships."""

    id: int
    source: str
    key: str
    uri: str
    links: list[str]


@dataclass(frozen=True, slots=True)
class Relationship:
    """An edge between two documents of a run."""

    source_id: int
    target_id: int
    kind: str  # "links_to" | "similar"
    score: float


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A worker process as its heartbeats recorded it."""

    worker_id: str
    run_id: str
    host: str
    pid: int
    started_at: float
    last_beat_at: float
    stopped_at: float | None
    current_docs: int
    processed: int
    failed: int
    seconds_since_beat: float
    pid_ns: str  # '' for workers recorded before schema 5


@dataclass(frozen=True, slots=True)
class CompletionStats:
    """Finished attempts in a recent time window, with their durations."""

    count: int
    avg_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True, slots=True)
class EventRow:
    """One thing that happened to a document (``docmill trace``), written with the change itself."""

    id: int
    run_id: str
    document_id: int
    at: float
    kind: str  # discovered changed claimed done unchanged retry dead released fenced lost removed requeued reset purged
    worker_id: str | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """A document held under a lease right now."""

    id: int
    run_id: str
    uri: str
    worker_id: str | None
    attempts: int
    claimed_at: float | None
    lease_expires_at: float | None
    held_seconds: float
    expired: bool


@dataclass(frozen=True, slots=True)
class ErrorRow:
    """A recent attempt that ended in an error (retry, dead, lost or fenced)."""

    document_id: int
    uri: str
    worker_id: str
    finished_at: float
    outcome: str
    error_class: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class RateBucket:
    """A rate-limit row after one operation on it (``docmill.ratelimit``); times on the store's clock."""

    granted: bool
    request_tokens: float
    token_tokens: float
    factor: float
    blocked_until: float
    now: float


class Backend(Protocol):
    """Everything the pipeline, the workers, the leader and the CLI ask of the store."""

    url: str

    # -- schema and runs ---------------------------------------------------------------
    def init_schema(self) -> None:
        """Create or migrate the schema; idempotent and safe when many processes call it at once."""

    def close(self) -> None:
        """Close the connection."""

    def check_connection_budget(self, config: Config, workers: int) -> None:
        """Raise ConfigError when ``workers`` processes would open more connections than allowed."""

    def wait_for_work(self, run_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for new or returned documents; True when woken early."""

    def open_run(self, run_id: str, config_json: str, *, rediscover: bool = False) -> RunInfo:
        """Create the run, or reopen a drained one for a new discovery pass; join an ingesting one.

        ``rediscover`` asks for a new pass of an ingesting run too (one left interrupted), unless its
        current pass has not finished yet.
        """

    def get_run(self, run_id: str) -> RunInfo | None:
        """The run's row, or None."""

    def list_runs(self) -> list[RunInfo]:
        """Every run, newest first."""

    def acquire_leadership(self, run_id: str, worker_id: str, ttl: float) -> bool:
        """Take or renew the run's leader lease; False when another live worker holds it."""

    def release_leadership(self, run_id: str, worker_id: str) -> None:
        """Give up the leader lease (on clean exit), so another worker need not wait for it to lapse."""

    def finish_discovery(self, run_id: str, generation: int) -> None:
        """Record that discovery pass ``generation`` enqueued everything it found."""

    def request_shutdown(self, run_id: str) -> None:
        """Ask every worker of the run, on every machine, to stop after its current documents."""

    # -- discovery -------------------------------------------------------------------
    def upsert_documents(self, run_id: str, refs: Sequence[DocumentRef], generation: int, *,
                         mark_seen: bool = True) -> UpsertCounts:
        """Enqueue new documents and re-enqueue changed ones; idempotent. With ``mark_seen`` every
        ref is stamped as seen by pass ``generation`` (what ``remove_unseen`` goes by); without it,
        refs already stored unchanged are only compared, never written."""

    def stored_versions(self, run_id: str, source: str, keys: Sequence[str]) -> Existing:
        """What the run holds of these keys of one source: {key: (version, state, uri)}; a pure read."""

    def source_versions(self, run_id: str, source: str, limit: int) -> Existing | None:
        """What the run holds of every document of one source, as ``stored_versions``, or None when
        that is more than ``limit`` documents; a pure read."""

    def count_source_documents(self, run_id: str, source: str) -> int:
        """Documents the run holds for one source (to guard against an emptied source root)."""

    def remove_unseen(self, run_id: str, source: str, generation: int) -> list[str]:
        """Delete documents (and their chunks) that discovery pass ``generation`` did not see."""

    # -- the queue -------------------------------------------------------------------
    def claim(self, run_id: str, worker_id: str, limit: int, lease_seconds: float,
              max_attempts: int) -> list[ClaimedDocument]:
        """Lease up to ``limit`` runnable documents; dead-letter expired ones out of attempts."""

    def extend_leases(self, lease_tokens: Sequence[str], lease_seconds: float) -> set[str]:
        """Push the leases forward; returns the tokens still held (a lost one is absent)."""

    def complete(self, doc: ClaimedDocument, result: DocumentResult) -> bool:
        """Replace the document's chunks and mark it done, in one fenced transaction."""

    def complete_many(self, items: Sequence[tuple[ClaimedDocument, DocumentResult]]) -> list[bool]:
        """``complete`` for several documents in one transaction; per document, False when fenced."""

    def complete_unchanged(self, doc: ClaimedDocument) -> bool:
        """Mark a document whose content hash did not change as done; its chunks stay."""

    def fail(self, doc: ClaimedDocument, error_class: str, message: str, retry_in: float | None) -> bool:
        """Record an attempt's error; ``retry_in`` seconds → back to pending, None → dead-letter."""

    def release(self, docs: Sequence[ClaimedDocument]) -> int:
        """Give documents back without spending an attempt (graceful shutdown)."""

    def remove_vanished(self, doc: ClaimedDocument, worker_id: str) -> bool:
        """Delete a held document whose file is gone from its source (fenced); False if no longer held."""

    def held_by(self, run_id: str, worker_id: str) -> list[ClaimedDocument]:
        """The documents ``worker_id`` holds claimed now."""

    def cached_vectors(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors already computed for these chunk texts with this model."""

    # -- workers ---------------------------------------------------------------------
    def register_worker(self, worker_id: str, run_id: str, host: str, pid: int, pid_ns: str) -> None:
        """Record a worker process as started (``pid_ns``: the PID namespace its pid belongs to)."""

    def local_workers(self, run_id: str, host: str, pid_ns: str) -> list[tuple[str, int]]:
        """(worker id, pid) of the run's unstopped workers whose pids are visible from here."""

    def expire_workers(self, run_id: str, worker_ids: list[str]) -> int:
        """End at once the claims, leadership and finalize leases of workers whose process is gone, and
        mark them stopped; the number of claims ended (taken over by the next claim, attempt spent)."""

    def beat_worker(self, worker_id: str, current_docs: int, processed: int, failed: int) -> None:
        """Record the worker's heartbeat and counters."""

    def stop_worker(self, worker_id: str) -> None:
        """Record a clean exit."""

    # -- finalize --------------------------------------------------------------------
    def counts(self, run_id: str) -> dict[str, int]:
        """Documents of the run by state (every state present, zeros included)."""

    def try_begin_finalize(self, run_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Move a drained run to finalizing; exactly one caller wins."""

    def extend_finalize(self, run_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Keep the finalize lease of a long relationship computation alive."""

    def finished_documents(self, run_id: str) -> list[DocumentLinks]:
        """Done documents with their link targets."""

    def document_vectors(self, run_id: str) -> tuple[list[int], np.ndarray]:
        """Mean chunk vector of every done document with chunks (ids, unit-norm matrix)."""

    def finalize_fingerprint(self, run_id: str) -> tuple[str, str | None]:
        """A fingerprint of the run's done documents now, and the one its relationships were last
        computed from (None when never)."""

    def complete_finalize(self, run_id: str, worker_id: str, edges: Sequence[Relationship] | None,
                          fingerprint: str) -> bool:
        """Mark the run complete, if still its finalizer; store ``edges`` (None: keep the stored ones)
        and the ``fingerprint`` they were computed from."""

    # -- cluster-wide rate limits (SQL in ratelimit.sql) ------------------------------------
    def rate_acquire(self, key: str, need_requests: float, need_tokens: float, request_rate: float,
                     request_capacity: float, token_rate: float, token_capacity: float) -> RateBucket:
        """Refill the shared bucket ``key`` and take the need if it is there, in one statement."""

    def rate_throttled(self, key: str, retry_after: float, decrease: float, min_factor: float) -> None:
        """A 429/503: cut the shared factor and block every worker for ``retry_after`` seconds."""

    def rate_succeeded(self, key: str, increase: float) -> None:
        """A successful request: raise the shared factor by ``increase`` (up to 1)."""

    # -- reading ---------------------------------------------------------------------
    def vector_search(self, query: np.ndarray, k: int, run_ids: Sequence[str] | None) -> list[SearchHit]:
        """Top ``k`` chunks by cosine similarity."""

    def text_search(self, query: str, k: int, run_ids: Sequence[str] | None) -> list[SearchHit]:
        """Top ``k`` chunks by full-text rank."""

    def documents(self, run_id: str | None, state: str | None, limit: int | None,
                  source: str | None = None) -> list[DocumentRow]:
        """Documents, optionally of one run, one state and one source."""

    def chunk_count(self, run_id: str) -> int:
        """Chunks stored for the run's documents."""

    def relationships(self, run_id: str) -> list[Relationship]:
        """Edges computed by the run's last finalize."""

    def worker_rows(self, run_id: str) -> list[WorkerRow]:
        """Workers that ever joined the run, newest first."""

    def recent_completions(self, run_id: str, window_seconds: float) -> CompletionStats:
        """Attempts that finished done or unchanged in the last ``window_seconds``."""

    # -- operations: status, dead letters, claims, trace, housekeeping ------------------
    def schema_version(self) -> int:
        """The schema version the store is at (``/readyz`` compares it with SCHEMA_VERSION)."""

    def failure_counts(self, run_id: str) -> dict[str, int]:
        """Dead documents of the run by error class."""

    def claims(self, run_id: str, limit: int | None = None) -> list[ClaimRow]:
        """Documents of the run held under a lease now: lapsed leases first, then by expiry (``limit`` rows)."""

    def recent_errors(self, run_id: str, limit: int) -> list[ErrorRow]:
        """The run's latest attempts that ended in retry, dead, lost or fenced (last hour)."""

    def find_document_ids(self, run_id: str, idents: Sequence[str]) -> list[int]:
        """Ids of the run's documents named by id, URI or key, including removed ones (from events)."""

    def document_rows(self, ids: Sequence[int]) -> list[DocumentRow]:
        """The documents with these ids that still exist."""

    def events(self, document_id: int) -> list[EventRow]:
        """A document's history, oldest first."""

    def relationship_count(self, document_id: int) -> int:
        """Edges from or to a document."""

    def requeue(self, run_id: str, ids: Sequence[int]) -> list[int]:
        """Dead (or waiting) documents back to pending now with attempts reset; history kept."""

    def purge_dead(self, run_id: str | None, older_than: float) -> int:
        """Delete dead documents (and chunks) unchanged for ``older_than`` seconds."""

    def reset_claims(self, run_id: str, older_than: float, reason: str) -> int:
        """Release claims held for at least ``older_than`` seconds (0: all) without spending an attempt."""

    def swap_alert_state(self, run_id: str, dead_count: int) -> int | None:
        """Store the dead count seen by this alert check; return the previous check's, or None."""

    def prune_events(self, older_than: float) -> int:
        """Delete events older than ``older_than`` seconds (the retention)."""

    def cleanup_finished_runs(self, older_than: float) -> dict[str, int]:
        """Drop attempts, events and worker rows of runs complete for ``older_than`` seconds."""
