"""Processing statistics of a run, read from the database so every machine sees the same numbers."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from docmill.backends import database_url, open_store
from docmill.backends.base import Backend, ClaimRow, RunInfo, WorkerRow
from docmill.config import Config
from docmill.errors import DocmillError, StoreError
from docmill.liveness import process_alive, visible_here
from docmill.models import DocState

#: Throughput windows: documents finished per second over the last 1, 5 and 15 minutes.
WINDOWS = {"1m": 60.0, "5m": 300.0, "15m": 900.0}
#: Claims status reads (lapsed first): a run holding more shows the first these many per worker.
CLAIMS_SAMPLE = 1000


@dataclass
class WorkerStatus:
    """One worker as its heartbeats recorded it, with the documents it holds now."""

    worker_id: str
    host: str
    pid: int
    state: str  # running | stale | gone (its process no longer exists, seen from this machine) | stopped
    started_at: float
    last_beat_at: float
    seconds_since_beat: float
    stopped_at: float | None
    current_docs: int
    processed: int
    failed: int
    holding: list[str] = field(default_factory=list)  # URIs of the documents it has claimed


@dataclass
class ProcessingStats:
    """The seeds' keys (``active_workers``, ``queue_depth``, ``throughput``, ``avg_processing_time``,
    ``failed_count``) and more. Readable as attributes or, as in the seeds, ``stats["queue_depth"]``."""

    run_id: str
    state: str  # ingesting | finalizing | complete
    leader_id: str | None
    leader_expires_in: float | None  # seconds left on the leader lease
    shutdown_requested: bool
    active_workers: int
    stale_workers: int
    queue_depth: int  # pending + claimed
    throughput: float  # documents per second over the last 5 minutes (1 minute when 5 has none)
    avg_processing_time: float | None  # seconds from claim to completion, last 15 minutes
    p95_processing_time: float | None
    failed_count: int  # documents in the dead-letter queue
    counts: dict[str, int]  # documents by state, every state present
    chunks: int
    claimed_expired: int  # claims whose lease lapsed (counted among the first CLAIMS_SAMPLE claims)
    oldest_claim_seconds: float | None  # longest time a document has been held (same sample)
    throughput_windows: dict[str, float] = field(default_factory=dict)  # "1m" / "5m" / "15m" → docs/s
    completed_windows: dict[str, int] = field(default_factory=dict)  # documents finished per window
    eta_seconds: float | None = None  # queue_depth / throughput
    failures_by_class: dict[str, int] = field(default_factory=dict)  # dead documents by error class
    workers: list[WorkerStatus] = field(default_factory=list)
    collected_at: float = 0.0
    query_seconds: float = 0.0  # how long the database took to answer all of the above

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def is_stale(worker: WorkerRow, heartbeat_interval: float) -> bool:
    """A running worker that missed more than two heartbeats."""
    return worker.stopped_at is None and worker.seconds_since_beat > 2 * heartbeat_interval + 5


def worker_state(w: WorkerRow, interval: float) -> str:
    """running, stale, gone or stopped (see WorkerStatus.state)."""
    if w.stopped_at is not None:
        return "stopped"
    if visible_here(w.host, w.pid_ns) and not process_alive(w.pid):
        return "gone"  # killed: known now, not after its heartbeats go missing
    return "stale" if is_stale(w, interval) else "running"


def collect(backend: Backend, config: Config, run_id: str, claims: list[ClaimRow] | None = None) -> ProcessingStats:
    """Statistics of one run from an open backend (a handful of indexed queries)."""
    started = time.perf_counter()
    run = backend.get_run(run_id)
    if run is None:
        raise DocmillError(f"no run {run_id} in this store: run `docmill ingest` with this config first, "
                           "or pass --run-id")
    counts = backend.counts(run_id)
    windows = {name: backend.recent_completions(run_id, seconds) for name, seconds in WINDOWS.items()}
    rates = {name: round(w.count / WINDOWS[name], 4) for name, w in windows.items()}
    rows = backend.worker_rows(run_id)
    held = claims if claims is not None else backend.claims(run_id, CLAIMS_SAMPLE)
    failures = backend.failure_counts(run_id) if counts[DocState.DEAD] else {}
    chunks = backend.chunk_count(run_id)
    interval = config.workers.heartbeat_interval
    holding: dict[str, list[str]] = {}
    for c in held:
        if c.worker_id and not c.expired:
            holding.setdefault(c.worker_id, []).append(c.uri)
    workers = [WorkerStatus(worker_id=w.worker_id, host=w.host, pid=w.pid, state=worker_state(w, interval),
                            started_at=w.started_at, last_beat_at=w.last_beat_at,
                            seconds_since_beat=round(w.seconds_since_beat, 1), stopped_at=w.stopped_at,
                            current_docs=w.current_docs, processed=w.processed, failed=w.failed,
                            holding=holding.get(w.worker_id, [])) for w in rows]
    queue_depth = counts[DocState.PENDING] + counts[DocState.CLAIMED]
    throughput = rates["5m"] or rates["1m"]
    now = time.time()
    return ProcessingStats(
        run_id=run_id, state=run.state, leader_id=run.leader_id,
        leader_expires_in=round(run.leader_expires_at - now, 1) if run.leader_expires_at else None,
        shutdown_requested=run.shutdown_requested,
        active_workers=sum(1 for w in workers if w.state == "running"),
        stale_workers=sum(1 for w in workers if w.state in ("stale", "gone")), queue_depth=queue_depth,
        throughput=throughput, avg_processing_time=windows["15m"].avg_seconds,
        p95_processing_time=windows["15m"].p95_seconds, failed_count=counts[DocState.DEAD], counts=counts,
        chunks=chunks, claimed_expired=sum(1 for c in held if c.expired),
        oldest_claim_seconds=round(max((c.held_seconds for c in held), default=0.0), 1) if held else None,
        throughput_windows=rates, completed_windows={k: w.count for k, w in windows.items()},
        eta_seconds=round(queue_depth / throughput, 1) if throughput and queue_depth else None,
        failures_by_class=failures, workers=workers, collected_at=now,
        query_seconds=round(time.perf_counter() - started, 4))


def get_processing_stats(config: Config | str | Path | None = None, *, db: str | None = None,
                         run_id: str | None = None) -> ProcessingStats:
    """Statistics of the run of ``config`` (or of ``run_id``)."""
    cfg = config if isinstance(config, Config) else Config.load(config)
    backend = open_store(database_url(cfg, db), cfg)
    try:
        return collect(backend, cfg, run_id or latest_run_id(backend, cfg))
    finally:
        backend.close()


def latest_run_id(backend: Backend, config: Config) -> str:
    """The config's run if it has one, else the most recently active run of the store."""
    own = config.run_id()
    if config.content_sources and backend.get_run(own):
        return own
    runs = stored_runs(backend)
    return own if any(r.run_id == own for r in runs) else runs[0].run_id


def stored_runs(backend: Backend) -> list[RunInfo]:
    """Every run of the store, newest first; StoreError when there is none yet."""
    runs = backend.list_runs()
    if not runs:
        raise StoreError("the store holds no run yet: run `docmill ingest FOLDER` first")
    return runs
