"""``ingest``: join (or start) the run of a config, work until it drains, and summarise.

One worker runs in this process; ``workers > 1`` spawns that many processes that share the queue
exactly as workers on other machines would.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from docmill.backends import database_url, open_backend
from docmill.backends.base import Backend, RunInfo
from docmill.config import Config, SourceConfig, real_path
from docmill.errors import ConfigError, DocmillError
from docmill.leader import sources_unchanged
from docmill.models import DocState, RunState
from docmill.observability import setup_logging
from docmill.pipeline import PipelineStats
from docmill.sources import create_source
from docmill.sources.base import Source
from docmill.stats import worker_state
from docmill.worker import Limit, Worker, WorkerReport, run_worker_process

POLL_SECONDS = 0.5
MAX_DEAD_LISTED = 50


class Progress(Protocol):
    """Receives queue progress while an ingest runs."""

    def update(self, finished: int, total: int, counts: dict[str, int]) -> None:
        """``finished`` of ``total`` documents are done or dead."""


@dataclass
class IngestSummary:
    """What an ingest did; ``--json`` prints it as one object."""

    run_id: str
    counts: dict[str, int]
    documents: int
    chunks: int
    seconds: float  # the whole call, from reading the config to closing the store
    docs_per_sec: float
    processed: int = 0
    done: int = 0
    unchanged: int = 0
    retried: int = 0
    dead: int = 0
    fenced: int = 0
    embedded_chunks: int = 0
    cache_hits: int = 0
    #: Documents done with nothing to index (blank, image-only, a PDF without a text layer).
    no_text: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    workers: int = 1
    limit_reached: bool = False
    finalized: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)
    embed_requests: int = 0
    rate_limited: int = 0
    #: Percentiles (p50/p95/p99, seconds) of each stage per document (embed: per batch) and of
    #: claim-to-completion per document; the highest in-flight chunk count and peak RSS of any worker.
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    max_inflight_chunks: int = 0
    peak_rss_mb: list[float] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when nothing is dead-lettered, 3 when some documents are, 1 when workers failed."""
        if self.errors and not self.processed:
            return 1
        return 3 if self.counts.get(DocState.DEAD, 0) else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return asdict(self)


def sources_from_paths(paths: Sequence[str]) -> list[SourceConfig]:
    """Turn SOURCE arguments (folders, files, globs) into source configs with unique names."""
    sources: list[SourceConfig] = []
    names: set[str] = set()
    for raw in paths:
        if "://" in raw:
            scheme = raw.split("://", 1)[0]
            raise ConfigError(f"{raw}: {scheme}:// sources are not supported yet; "
                              "docmill reads local folders, files and glob patterns")
        stem = Path(real_path(raw.split("*", 1)[0] or ".")).name or "root"
        name, n = stem, 2
        while name in names:
            name, n = f"{stem}-{n}", n + 1
        names.add(name)
        sources.append(SourceConfig(name=name, path=raw))
    return sources


def prepare_config(config: Config | str | Path | None, sources: Sequence[str]) -> Config:
    """The config to ingest with: SOURCE arguments replace ``content_sources``."""
    cfg = config if isinstance(config, Config) else Config.load(config)
    if sources:
        cfg = cfg.model_copy(update={"content_sources": sources_from_paths(sources)})
    if not cfg.content_sources:
        raise ConfigError("nothing to ingest: give a folder (docmill ingest ./docs) "
                          "or list content_sources in the config")
    return cfg


def ingest(config: Config | str | Path | None = None, sources: Sequence[str] = (), *, db: str | None = None,
           workers: int | None = None, limit: int | None = None, progress: Progress | None = None,
           handle_signals: bool = False) -> IngestSummary:
    """Process every document of the config's sources (or of ``sources``) until the run drains."""
    started = time.monotonic()
    cfg = prepare_config(config, sources)
    configured = {s.name: create_source(s) for s in cfg.content_sources}
    for source in configured.values():
        source.check()  # a root that cannot be listed at all stops the ingest before the store is touched
    setup_logging(cfg.logging)
    url = database_url(cfg, db)
    n_workers = workers or cfg.workers.max_workers
    backend = open_backend(url, cfg)
    try:
        backend.check_connection_budget(cfg, n_workers)
        backend.init_schema()
        run_id = cfg.run_id()
        run = backend.get_run(run_id)
        if (counts := _nothing_to_do(backend, run, configured)) is not None:
            return _summarise(backend, run_id, [], [], n_workers, limit, time.monotonic() - started, counts)
        backend.open_run(run_id, json.dumps(cfg.redacted(), sort_keys=True),
                         rediscover=_interrupted(backend, cfg, run))
        # After the no-change exit: the CPU count is a read of /sys.
        threads = cfg.embedding.threads or max(1, (os.cpu_count() or 1) // n_workers)
        watcher = _ProgressWatcher(url, cfg, run_id, progress) if progress else None
        if watcher:
            watcher.start()
        try:
            if n_workers == 1:
                reports, errors = _run_in_process(cfg, url, limit, threads, handle_signals)
            else:
                reports, errors = _run_processes(cfg, url, n_workers, limit, threads, handle_signals)
        finally:
            if watcher:
                watcher.stop()
        return _summarise(backend, run_id, reports, errors, n_workers, limit, time.monotonic() - started)
    finally:
        backend.close()


def _nothing_to_do(backend: Backend, run: RunInfo | None, sources: dict[str, Source]) -> dict[str, int] | None:
    """The run's counts when it is complete, holds nothing pending or claimed, and its sources list
    exactly what it stored: then no worker needs to start, and nothing is written. Else None."""
    if run is None or run.state != RunState.COMPLETE or run.discovered_gen < run.discovery_gen:
        return None
    counts = backend.counts(run.run_id)
    if counts[DocState.PENDING] or counts[DocState.CLAIMED]:
        return None
    return counts if sources_unchanged(backend, sources, run.run_id) else None


def _interrupted(backend: Backend, cfg: Config, run: RunInfo | None) -> bool:
    """True when the run was left ingesting with no worker alive (stopped, killed, or a lost machine):
    this ingest resumes it, and lists the sources again so files added or removed meanwhile are seen."""
    if run is None or run.state == RunState.COMPLETE:
        return False
    interval = cfg.workers.heartbeat_interval
    return not any(worker_state(w, interval) == "running" for w in backend.worker_rows(run.run_id))


def _run_in_process(cfg: Config, url: str, limit: int | None, threads: int,
                    handle_signals: bool) -> tuple[list[dict[str, Any]], list[str]]:
    value = mp.Value("i", limit) if limit is not None else None
    worker = Worker(cfg, url, Limit(value), threads=threads)
    previous = None
    if handle_signals and threading.current_thread() is threading.main_thread():
        previous = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        worker.install_signal_handlers()
    try:
        report: WorkerReport = worker.run()
    finally:
        if previous:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
    return [report.__dict__], []


def _process_context() -> mp.context.BaseContext:
    """Where available, a fork server that imported docmill once forks each worker: 8 spawned
    workers each spent 0.4 CPU-s importing on a 2-core machine, ~2 s before the last one claimed.
    It forks from a process with no threads and no model loaded, so nothing unsafe is inherited."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _run_processes(cfg: Config, url: str, n: int, limit: int | None, threads: int,
                   handle_signals: bool) -> tuple[list[dict[str, Any]], list[str]]:
    ctx = _process_context()
    results = ctx.Queue()
    value = ctx.Value("i", limit) if limit is not None else None
    data = cfg.model_dump(mode="json")
    environ, cwd = dict(os.environ), os.getcwd()
    procs = [ctx.Process(target=run_worker_process, name=f"docmill-worker-{i}",
                         args=(with_worker_ports(data, i), url, value, threads, results, environ, cwd))
             for i in range(n)]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        # Children in the terminal's process group got Ctrl-C too; a plain `kill` reaches only us.
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signum)

    previous = None
    if handle_signals and threading.current_thread() is threading.main_thread():
        previous = (signal.signal(signal.SIGINT, forward), signal.signal(signal.SIGTERM, forward))
    reports: list[dict[str, Any]] = []
    try:
        while any(p.is_alive() for p in procs) or not results.empty():
            with contextlib.suppress(queue.Empty):
                reports.append(results.get(timeout=POLL_SECONDS))
        for p in procs:
            p.join()
    finally:
        if previous:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
    errors = [r["error"] for r in reports if "error" in r]
    errors += [f"{p.name} exited with code {p.exitcode}" for p in procs if p.exitcode not in (0, None)
               and not any("error" in r for r in reports)]
    return [r for r in reports if "error" not in r], errors


def with_worker_ports(data: dict[str, Any], index: int) -> dict[str, Any]:
    """Worker ``index``'s config: its /metrics and health ports are the configured ones + index (0 stays 0)."""
    mon = dict(data["monitoring"])
    for key in ("metrics_port", "health_check_port"):
        if mon[key]:
            mon[key] += index
    return {**data, "monitoring": mon}


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 and the count of a list of durations (seconds)."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "n": len(ordered)}


class _ProgressWatcher(threading.Thread):
    """Polls queue counts on its own connection and reports them."""

    def __init__(self, url: str, cfg: Config, run_id: str, progress: Progress) -> None:
        super().__init__(name="docmill-progress", daemon=True)
        self.url, self.cfg, self.run_id, self.progress = url, cfg, run_id, progress
        self.done = threading.Event()

    def run(self) -> None:
        backend = open_backend(self.url, self.cfg)
        try:
            while True:
                self._report(backend)
                if self.done.wait(POLL_SECONDS):
                    self._report(backend)
                    return
        except DocmillError:
            return  # progress is cosmetic; the workers report real errors
        finally:
            backend.close()

    def _report(self, backend: Backend) -> None:
        counts = backend.counts(self.run_id)
        total = sum(counts.values())
        self.progress.update(counts[DocState.DONE] + counts[DocState.DEAD], total, counts)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


def _summarise(backend: Backend, run_id: str, reports: list[dict[str, Any]], errors: list[str], n_workers: int,
               limit: int | None, seconds: float, counts: dict[str, int] | None = None) -> IngestSummary:
    stats = PipelineStats()
    discovery: dict[str, Any] = {}
    finalized = False
    for r in reports:
        stats.merge(r.get("stats") or {})
        finalized = finalized or bool(r.get("finalized"))
        if r.get("discovery"):
            discovery = r["discovery"]
    counts = counts or backend.counts(run_id)
    dead_rows = backend.documents(run_id, DocState.DEAD, MAX_DEAD_LISTED) if counts[DocState.DEAD] else []
    return IngestSummary(
        run_id=run_id, counts=counts, documents=sum(counts.values()), chunks=backend.chunk_count(run_id),
        seconds=round(seconds, 3), docs_per_sec=round(stats.processed / seconds, 3) if seconds else 0.0,
        processed=stats.processed, done=stats.done, unchanged=stats.unchanged, retried=stats.retried,
        dead=stats.dead, fenced=stats.fenced, embedded_chunks=stats.embedded_chunks, cache_hits=stats.cache_hits,
        no_text=stats.no_text,
        new=discovery.get("new", 0), changed=discovery.get("changed", 0),
        removed=discovery.get("removed", 0) + stats.vanished,
        workers=n_workers, limit_reached=limit is not None and counts[DocState.PENDING] > 0,
        finalized=finalized, stage_seconds={k: round(v, 3) for k, v in stats.stage_seconds.items()},
        embed_requests=stats.embed_requests, rate_limited=stats.rate_limited,
        latency={name: percentiles(samples) for name, samples in
                 [*stats.stage_samples.items(), ("document", stats.doc_seconds)] if samples},
        max_inflight_chunks=stats.max_inflight_chunks,
        peak_rss_mb=[float((r.get("stats") or {}).get("peak_rss_mb", 0.0)) for r in reports],
        dead_letters=[{"id": d.id, "uri": d.uri, "error_class": d.error_class, "error": d.last_error}
                      for d in dead_rows],
        warnings=[*discovery.get("warnings", []), *_no_text_warnings(stats)], errors=errors)


def _no_text_warnings(stats: PipelineStats) -> list[str]:
    """One warning per document stored without text (the first few), then a count of the rest."""
    shown = [f"no text to index in {named}" for named in stats.no_text_named]
    if stats.no_text > len(shown):
        shown.append(f"and {stats.no_text - len(shown)} more documents with no text to index")
    return shown
