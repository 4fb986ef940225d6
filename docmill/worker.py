"""A worker process: claim → process → complete/fail, with a heartbeat thread and graceful stop.

Workers are identical: whichever holds the run's leader lease also discovers documents; whichever
finds the run drained first finalizes it. A worker uses two database connections, its own and
its heartbeat thread's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from docmill import relationships
from docmill.backends import open_backend
from docmill.backends.base import Backend, ClaimedDocument
from docmill.config import Config
from docmill.embedders import create_embedder
from docmill.errors import DocmillError, StoreUnavailableError
from docmill.leader import DiscoveryReport, discover
from docmill.liveness import pid_namespace, process_alive
from docmill.models import RunState
from docmill.observability import Endpoints, serve_endpoints, set_log_context
from docmill.ops import CircuitBreaker, housekeeping
from docmill.pipeline import Pipeline, PipelineStats
from docmill.sources import create_source
from docmill.sources.base import Source

log = logging.getLogger(__name__)
IDLE_MIN = 0.05  # first idle wait; doubles up to poll_interval so a finishing run ends promptly
BUSY_WAIT = 0.5  # longest wait for pipeline progress before checking the run (shutdown, new work) again


class Limit:
    """How many documents this ingest command may still claim (shared by its worker processes)."""

    def __init__(self, value: Any | None) -> None:
        self.value = value  # a multiprocessing.Value("i") or None for no limit

    def take(self, wanted: int) -> int:
        """Reserve up to ``wanted`` documents; returns how many may be claimed."""
        if self.value is None:
            return wanted
        with self.value.get_lock():
            granted = max(0, min(wanted, self.value.value))
            self.value.value -= granted
        return granted

    def give_back(self, count: int) -> None:
        """Return reserved documents that were not claimed."""
        if self.value is not None and count > 0:
            with self.value.get_lock():
                self.value.value += count

    def exhausted(self) -> bool:
        """True once every allowed document was claimed."""
        return self.value is not None and self.value.value <= 0


@dataclass
class WorkerReport:
    """A worker's stats and what its discovery passes found."""

    worker_id: str
    stats: dict[str, Any]
    discovery: dict[str, Any] | None
    finalized: bool


class Heartbeat(threading.Thread):
    """Extends the leases of held documents, renews leadership, and records the worker as alive."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="docmill-heartbeat", daemon=True)
        self.worker = worker
        self.done = threading.Event()

    def run(self) -> None:
        w = self.worker
        backend: Backend | None = None
        interval = w.config.workers.heartbeat_interval
        while not self.done.wait(interval):
            try:
                if backend is None:
                    backend = open_backend(w.db_url, w.config)
                self.beat(backend)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
                if backend is not None:
                    backend.close()
                    backend = None
        if backend is not None:
            backend.close()

    def beat(self, backend: Backend) -> None:
        """One round of lease extension and liveness."""
        w = self.worker
        lease = w.config.workers.claim_timeout
        tokens = w.held_tokens()
        if tokens:
            held = backend.extend_leases(tokens, lease)
            # A document whose outcome was stored while the statement ran is not lost: it is being
            # settled, or no longer held (settling is read first: a token leaves it only after it left
            # the held ones).
            settling = w.pipeline.settling() if w.pipeline else frozenset()
            lost = (set(tokens) - held) & set(w.held_tokens()) - settling
            if lost:
                log.warning("lost %d lease(s); those documents will be finished by another worker", len(lost))
        if w.is_leader:
            w.is_leader = backend.acquire_leadership(w.run_id, w.worker_id, lease)
        if w.finalizing:
            backend.extend_finalize(w.run_id, w.worker_id, lease)
        stats = w.pipeline.stats if w.pipeline else PipelineStats()
        backend.beat_worker(w.worker_id, len(tokens), stats.processed, stats.dead + stats.retried)
        if not w.stop.is_set() and (run := backend.get_run(w.run_id)) and run.shutdown_requested:
            # `docmill shutdown` reaches a worker busy at its chunk budget too (its loop is not polling the run).
            log.warning("shutdown requested for run %s: stopping", w.run_id)
            w.stop.set()


class Worker:
    """One worker's loop; ``run()`` returns when the run is complete, on stop, or at the limit."""

    def __init__(self, config: Config, db_url: str, limit: Limit | None = None, threads: int | None = None,
                 on_progress: Callable[[], None] | None = None) -> None:
        self.config = config
        self.db_url = db_url
        self.run_id = config.run_id()
        self.worker_id = config.worker_name()
        self.limit = limit or Limit(None)
        self.threads = threads
        self.stop = threading.Event()
        self.is_leader = False
        self.finalizing = False
        self._held: dict[str, ClaimedDocument] = {}
        self._held_lock = threading.Lock()
        self.pipeline: Pipeline | None = None
        self.discovery: DiscoveryReport | None = None
        self.finalized = False
        self.on_progress = on_progress
        self.breaker = CircuitBreaker(config)  # workers.circuit_breaker_threshold
        self._next_liveness_check = 0.0

    def held_tokens(self) -> list[str]:
        """Lease tokens of the documents being processed now."""
        with self._held_lock:
            return list(self._held)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: stop claiming and finish or release; a second signal exits at once."""
        def handler(signum: int, _frame: object) -> None:
            if self.stop.is_set():
                raise SystemExit(128 + signum)
            log.warning("stopping: finishing or releasing held documents (signal again to exit now)")
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> WorkerReport:
        """Work until the run is complete, a stop is asked for, or the limit is reached."""
        set_log_context(worker_id=self.worker_id, run_id=self.run_id)
        backend = open_backend(self.db_url, self.config)
        heartbeat = Heartbeat(self)
        endpoints: Endpoints | None = None
        store_lost = False  # the store stopped taking writes: shutdown skips what would wait on it
        try:
            sources: dict[str, Source] = {s.name: create_source(s) for s in self.config.content_sources}
            self.pipeline = Pipeline(self.config, backend,
                                     lambda: create_embedder(self.config.embedding, threads=self.threads),
                                     sources, self.stop, on_done=self._done)
            self._take_back_from_gone_workers(backend, registered=False)
            backend.register_worker(self.worker_id, self.run_id, socket.gethostname(), os.getpid(), pid_namespace())
            heartbeat.start()
            endpoints = serve_endpoints(self)  # /metrics, /healthz, /readyz when monitoring.enabled
            self._loop(backend, sources)
        except StoreUnavailableError:
            store_lost = True
            raise
        finally:
            if endpoints is not None:
                endpoints.close()
            heartbeat.done.set()
            self._shutdown(backend, store_lost)
            heartbeat.join(timeout=5)
        return WorkerReport(self.worker_id, _stats_dict(self.pipeline.stats if self.pipeline else None),
                            self.discovery.__dict__ if self.discovery else None, self.finalized)

    def _loop(self, backend: Backend, sources: dict[str, Source]) -> None:
        """Claim while the pipeline has room, keep it moving, and end it cleanly (or abort it)."""
        assert self.pipeline is not None
        try:
            self._claim_loop(backend, sources, self.pipeline)
            # Shutdown requested, limit reached or run drained: finish what is held, claim nothing.
            self.pipeline.input_paused()
            while self.pipeline.busy() and not self.stop.is_set():
                self.pipeline.pump(BUSY_WAIT)
            # A stop (SIGTERM): complete what already has its vectors, release the rest.
            self.pipeline.finish()
        except BaseException as exc:
            # Interrupted (a second signal, also while finishing) or crashed: give back whatever is
            # still claimed. Release is fenced on state and token: documents finished are not touched.
            # A store that is gone cannot take them back: their leases lapse instead.
            with contextlib.suppress(Exception):
                self.pipeline.abort(release=not isinstance(exc, StoreUnavailableError))
            raise

    def _claim_loop(self, backend: Backend, sources: dict[str, Source], pipeline: Pipeline) -> None:
        workers = self.config.workers
        idle = IDLE_MIN
        while not self.stop.is_set():
            room = pipeline.room()
            if pipeline.busy() and not room:
                pipeline.pump(BUSY_WAIT)  # backpressure: at the chunk budget, claim nothing more
                continue
            run = backend.get_run(self.run_id)
            if run is None:
                raise DocmillError(f"run {self.run_id} does not exist (was the store reset?)")
            if run.shutdown_requested:
                log.warning("shutdown requested for run %s: stopping", self.run_id)
                self.stop.set()  # as SIGTERM: complete what has its vectors, release the rest (no attempt spent)
                break
            if run.discovered_gen < run.discovery_gen and self._lead(backend):
                self.discovery = discover(backend, self.run_id, run.discovery_gen, sources,
                                          lambda: self.is_leader and not self.stop.is_set())
                continue
            if self.limit.exhausted():
                break
            if not pipeline.busy():
                self.breaker.check(pipeline.stats.consecutive_failures, self.stop,
                                   lambda: bool((r := backend.get_run(self.run_id)) and r.shutdown_requested),
                                   workers.poll_interval)
            wanted = self.limit.take(max(1, room))  # 0 only if a stop came since the check above
            docs = backend.claim(self.run_id, self.worker_id, wanted, workers.claim_timeout, workers.max_retries)
            self.limit.give_back(wanted - len(docs))
            if docs:
                idle = IDLE_MIN
                self._process(docs)
                pipeline.pump(0)
                continue
            pipeline.input_paused()
            if pipeline.busy():
                pipeline.pump(BUSY_WAIT)  # nothing to claim now; the run is not drained while we hold work
                continue
            if run.discovered_gen >= run.discovery_gen and self._drained(backend, run.state):
                break
            if time.monotonic() >= self._next_liveness_check:
                self._next_liveness_check = time.monotonic() + workers.poll_interval
                self._take_back_from_gone_workers(backend, registered=True)
            idle = IDLE_MIN if self._idle_wait(backend, idle) else min(idle * 2, workers.poll_interval)

    def _idle_wait(self, backend: Backend, seconds: float) -> bool:
        """Wait for work; True when woken early (PostgreSQL NOTIFY). Slices of a second keep a stop prompt."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if backend.wait_for_work(self.run_id, min(left, 1.0)):
                return True
        return False

    def _take_back_from_gone_workers(self, backend: Backend, registered: bool) -> None:
        """Claims of this run's workers on this machine whose process is gone come back now, not when
        their leases lapse: a re-run after a crash or a SIGKILL goes on at once. Workers elsewhere (or
        whose pids this process cannot see) are left to their leases."""
        namespace = pid_namespace()
        if not namespace:
            return
        me = os.getpid()
        # A row with this worker's id and pid before it registered is a predecessor that had the same pid.
        gone = [worker_id for worker_id, pid in backend.local_workers(self.run_id, socket.gethostname(), namespace)
                if (pid == me and worker_id == self.worker_id and not registered)
                or (pid != me and not process_alive(pid))]
        if gone:
            taken = backend.expire_workers(self.run_id, gone)
            log.log(logging.WARNING if taken else logging.INFO,
                    "%s exited without finishing: %d of its documents are taken back now", ", ".join(gone), taken)

    def _lead(self, backend: Backend) -> bool:
        self.is_leader = backend.acquire_leadership(self.run_id, self.worker_id, self.config.workers.claim_timeout)
        return self.is_leader

    def _process(self, docs: list[ClaimedDocument]) -> None:
        """Hand claimed documents to the staged pipeline; the heartbeat covers them from now on."""
        assert self.pipeline is not None
        with self._held_lock:
            self._held.update({d.lease_token: d for d in docs})
        self.pipeline.submit(docs)

    def _done(self, doc: ClaimedDocument) -> None:
        """The pipeline no longer holds ``doc`` (completed, failed or released)."""
        with self._held_lock:
            self._held.pop(doc.lease_token, None)
        if self.on_progress:
            self.on_progress()

    def _drained(self, backend: Backend, state: str) -> bool:
        """True when the run needs nothing more from this worker (finalizing it if it is the last)."""
        if state == RunState.COMPLETE:
            return True
        counts = backend.counts(self.run_id)
        if counts["pending"] or counts["claimed"]:
            return False
        lease = self.config.workers.claim_timeout
        if not backend.try_begin_finalize(self.run_id, self.worker_id, lease):
            return False  # someone else is finalizing; wait for it to mark the run complete
        self.finalizing = True
        try:
            current, stored = backend.finalize_fingerprint(self.run_id)
            # Nothing done changed since the edges were computed (a re-run that found no change):
            # keep them, rather than redo an all-pairs similarity over the whole run.
            edges = None if current == stored else relationships.compute(backend, self.run_id)
            self.finalized = backend.complete_finalize(self.run_id, self.worker_id, edges, current)
            if edges is None:
                log.info("run %s finalized: documents unchanged, relationships kept", self.run_id)
            else:
                log.info("run %s finalized: %d relationships", self.run_id, len(edges))
            housekeeping(backend, self.config)  # event retention, cleanup of long-finished runs
        finally:
            self.finalizing = False
        return True

    def _shutdown(self, backend: Backend, store_lost: bool) -> None:
        if store_lost:
            backend.close()  # each call would wait out another reconnect deadline
            return
        try:
            # Whatever this worker still holds goes back now, so the next ingest need not wait for the
            # leases to lapse: an exit part-way (a second Ctrl-C, a crash between a claim and handing
            # its documents to the pipeline) can leave claims the pipeline never knew of.
            if leftover := backend.held_by(self.run_id, self.worker_id):
                backend.release(leftover)
            if self.is_leader:
                backend.release_leadership(self.run_id, self.worker_id)
            backend.stop_worker(self.worker_id)
        except Exception as exc:
            log.warning("could not release held work cleanly: %s", exc)
        finally:
            backend.close()


def _stats_dict(stats: PipelineStats | None) -> dict[str, Any]:
    if stats is None:
        return {}
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in stats.__dict__.items()}


def run_worker_process(config_data: dict[str, Any], db_url: str, limit_value: Any, threads: int,
                       results: Any, environ: dict[str, str], cwd: str) -> None:
    """Entry point of a worker process: run, then send the report to the parent."""
    from docmill.observability import setup_logging

    # A worker forked from the fork server starts with the server's environment and folder, as they
    # were when it started; the ingest that starts this worker may have changed either since.
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    config = Config(**config_data)
    setup_logging(config.logging)
    worker = Worker(config, db_url, Limit(limit_value), threads=threads)
    worker.install_signal_handlers()
    try:
        report = worker.run()
    except DocmillError as exc:
        log.error("%s", exc)
        results.put({"worker_id": worker.worker_id, "error": str(exc)})
        raise SystemExit(1) from None
    results.put(report.__dict__)
    # A tiny pause lets the queue's feeder thread flush before the process exits.
    time.sleep(0.05)
