"""Processing statistics of a run, read from the database so every machine sees the same numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from docmill.backends import database_url, open_backend
from docmill.backends.base import Backend, WorkerRow
from docmill.config import Config
from docmill.errors import DocmillError
from docmill.models import DocState

WINDOWS = {"1m": 60.0, "5m": 300.0, "15m": 900.0}


@dataclass
class ProcessingStats:
    """The seeds' keys (active_workers, queue_depth, throughput, avg_processing_time, failed_count) and more."""

    run_id: str
    state: str
    active_workers: int
    stale_workers: int
    queue_depth: int
    throughput: float  # documents per second over the last 5 minutes
    avg_processing_time: float | None  # seconds per document over the last 15 minutes
    p95_processing_time: float | None
    failed_count: int
    counts: dict[str, int]
    chunks: int
    leader_id: str | None
    throughput_windows: dict[str, float] = field(default_factory=dict)
    eta_seconds: float | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def is_stale(worker: WorkerRow, heartbeat_interval: float) -> bool:
    """A running worker that missed more than two heartbeats."""
    return worker.stopped_at is None and worker.seconds_since_beat > 2 * heartbeat_interval + 5


def collect(backend: Backend, config: Config, run_id: str) -> ProcessingStats:
    """Statistics of one run from an open backend."""
    run = backend.get_run(run_id)
    if run is None:
        raise DocmillError(f"no run {run_id} in this store: run `docmill ingest` with this config first, "
                           "or pass --run-id (see `docmill status --all`)")
    counts = backend.counts(run_id)
    windows = {name: backend.recent_completions(run_id, seconds) for name, seconds in WINDOWS.items()}
    rates = {name: round(w.count / WINDOWS[name], 4) for name, w in windows.items()}
    workers = backend.worker_rows(run_id)
    interval = config.workers.heartbeat_interval
    live = [w for w in workers if w.stopped_at is None and not is_stale(w, interval)]
    queue_depth = counts[DocState.PENDING] + counts[DocState.CLAIMED]
    throughput = rates["5m"] or rates["1m"]
    return ProcessingStats(
        run_id=run_id, state=run.state, active_workers=len(live),
        stale_workers=sum(1 for w in workers if is_stale(w, interval)), queue_depth=queue_depth,
        throughput=throughput, avg_processing_time=windows["15m"].avg_seconds,
        p95_processing_time=windows["15m"].p95_seconds, failed_count=counts[DocState.DEAD], counts=counts,
        chunks=backend.chunk_count(run_id), leader_id=run.leader_id, throughput_windows=rates,
        eta_seconds=round(queue_depth / throughput, 1) if throughput and queue_depth else None,
        workers=[{**asdict(w), "stale": is_stale(w, interval)} for w in workers])


def get_processing_stats(config: Config | str | Path | None = None, *, db: str | None = None,
                         run_id: str | None = None) -> ProcessingStats:
    """Statistics of the run of ``config`` (or of ``run_id``)."""
    cfg = config if isinstance(config, Config) else Config.load(config)
    backend = open_backend(database_url(cfg, db), cfg)
    try:
        return collect(backend, cfg, run_id or latest_run_id(backend, cfg))
    finally:
        backend.close()


def latest_run_id(backend: Backend, config: Config) -> str:
    """The config's run if it has one, else the most recently active run of the store."""
    own = config.run_id()
    if config.content_sources and backend.get_run(own):
        return own
    runs = backend.list_runs()
    if not runs:
        raise DocmillError("the store is empty: run `docmill ingest SOURCE` first")
    return own if any(r.run_id == own for r in runs) else runs[0].run_id
