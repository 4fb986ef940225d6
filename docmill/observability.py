"""Logging set-up: readable lines or one JSON object per line, with worker and run ids."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from docmill.config import LoggingConfig
from docmill.printable import printable

_SECRET_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_CONTEXT: dict[str, str] = {}


def redact(text: str) -> str:
    """Hide passwords embedded in URLs inside any text."""
    return _SECRET_IN_URL.sub(r"\1***@", text)


def set_log_context(**values: str) -> None:
    """Fields added to every log record of this process (worker_id, run_id)."""
    _CONTEXT.update(values)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name,
                "message": redact(record.getMessage()), **_CONTEXT}
        if hasattr(record, "doc_id"):
            data["doc_id"] = record.doc_id
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def __init__(self, with_worker: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        self.with_worker = with_worker

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A log line names files and quotes their errors: their control characters are shown, not obeyed,
        # and a newline in a file name cannot forge a line of its own (a traceback keeps its lines).
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        worker = _CONTEXT.get("worker_id")
        return f"{line} [{worker}]" if self.with_worker and worker else line


def setup_logging(cfg: LoggingConfig) -> None:
    """Configure the ``docmill`` logger from the config's ``logging`` section."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if cfg.structured else _TextFormatter(cfg.include_worker_id))
    logger = logging.getLogger("docmill")
    logger.handlers[:] = [handler]
    # Called on every ingest, and setting a level clears the cache of every logger in the process
    # (~0.8 ms with LlamaIndex's loggers loaded, measured): set it only when it changes.
    if logger.level != logging.getLevelName(cfg.level):
        logger.setLevel(cfg.level)
    logger.propagate = False


# == Prometheus metrics and health endpoints of a worker process ==================================
# Each worker process serves its own /metrics (monitoring.metrics_port; with --workers N, worker i
# listens on metrics_port + i) and /healthz + /readyz (health_check_port + i). Port 0 picks a free
# port; the actual one is logged at INFO. Counters come from the worker's own PipelineStats, read at
# scrape time, so the pipeline needs no metric calls; the queue gauges come from the database.

#: Seconds the database gauges (queue depth, active workers) and the readiness answer are cached.
DB_REFRESH_SECONDS = 5.0
READY_CACHE_SECONDS = 2.0
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_EMBED_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
log = logging.getLogger(__name__)


def _rss_bytes() -> int:
    """Resident memory of this process (``/proc/self/statm``; peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _CpuMeter:
    """CPU seconds used per wall second since the previous reading (1.0 = one core busy)."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), self._cpu())

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system

    def ratio(self) -> float:
        now, cpu = time.monotonic(), self._cpu()
        wall, used = now - self._last[0], cpu - self._last[1]
        self._last = (now, cpu)
        return round(used / wall, 4) if wall > 0 else 0.0


class WorkerCollector:
    """The ``docmill_*`` metrics of one worker process, computed when Prometheus scrapes."""

    def __init__(self, worker: Any) -> None:
        from prometheus_client import Histogram

        self.worker = worker
        self.cpu = _CpuMeter()
        self._db_cache: tuple[float, dict[str, int], int] | None = None
        self._db_lock = threading.Lock()
        self._seen = {"doc": 0, "embed": 0}
        # Real histograms, fed at scrape time from the samples the pipeline already records.
        self.duration = Histogram("docmill_processing_duration_seconds", "Seconds from claim to completion "
                                  "per document", registry=None, buckets=_DURATION_BUCKETS)
        self.embed = Histogram("docmill_embed_duration_seconds", "Seconds per embedding batch (latency)",
                               registry=None, buckets=_EMBED_BUCKETS)

    def _sync_histograms(self, stats: Any) -> None:
        for key, samples, hist in (("doc", stats.doc_seconds, self.duration),
                                   ("embed", stats.stage_samples.get("embed", []), self.embed)):
            for value in samples[self._seen[key]:]:
                hist.observe(value)
            self._seen[key] = len(samples)

    def _database(self) -> tuple[dict[str, int], int]:
        """Queue depth by state and active workers of the run, at most every DB_REFRESH_SECONDS."""
        with self._db_lock:
            if self._db_cache and time.monotonic() - self._db_cache[0] < DB_REFRESH_SECONDS:
                return self._db_cache[1], self._db_cache[2]
            from docmill.backends import open_backend
            from docmill.stats import worker_state

            w = self.worker
            backend = open_backend(w.db_url, w.config)
            try:
                counts = backend.counts(w.run_id)
                interval = w.config.workers.heartbeat_interval
                active = sum(1 for r in backend.worker_rows(w.run_id) if worker_state(r, interval) == "running")
            finally:
                backend.close()
            self._db_cache = (time.monotonic(), counts, active)
            return counts, active

    def collect(self) -> Any:
        """Yield every metric family (called by prometheus_client on each scrape)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        w = self.worker
        stats = w.pipeline.stats if w.pipeline is not None else None
        wid = w.worker_id
        docs = CounterMetricFamily("docmill_documents", "Documents by what happened to them in this worker",
                                   labels=["status"])
        if stats is not None:
            held = len(w.held_tokens())
            for status, value in (("claimed", stats.processed + stats.released + held), ("done", stats.done),
                                  ("unchanged", stats.unchanged), ("retry", stats.retried), ("dead", stats.dead),
                                  ("fenced", stats.fenced), ("released", stats.released)):
                docs.add_metric([status], value)
        yield docs
        for name, help_text, attr in (
                ("docmill_chunks", "Chunks written", "chunks_written"),
                ("docmill_embedded_chunks", "Chunk texts sent to the embedding model", "embedded_chunks"),
                ("docmill_embed_cache_hits", "Chunk vectors taken from the cache", "cache_hits"),
                ("docmill_embed_batches", "Embedding batches (model calls or HTTP requests)", "embed_requests"),
                ("docmill_retries", "Failed attempts scheduled for a retry", "retried"),
                ("docmill_dead_letters", "Documents this worker moved to the dead-letter queue", "dead"),
                ("docmill_fenced_completions", "Completions rejected because the lease was lost", "fenced")):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], getattr(stats, attr, 0) if stats is not None else 0)
            yield family
        if stats is not None:
            self._sync_histograms(stats)
        yield from self.duration.collect()
        yield from self.embed.collect()
        for name, help_text, value in (
                ("docmill_memory_usage_bytes", "Resident memory of this worker process", _rss_bytes()),
                ("docmill_cpu_usage_ratio", "CPU seconds per second since the last scrape", self.cpu.ratio()),
                ("docmill_db_connections_active", "Database connections this worker holds (work + heartbeat)",
                 1 + sum(1 for t in threading.enumerate() if t.name == "docmill-heartbeat" and t.is_alive()))):
            gauge = GaugeMetricFamily(name, help_text, labels=["worker_id"])
            gauge.add_metric([wid], value)
            yield gauge
        try:
            counts, active = self._database()
        except Exception as exc:  # a scrape must answer even while the database is away
            log.warning("metrics: cannot read the queue from the database: %s", exc)
            return
        depth = GaugeMetricFamily("docmill_queue_depth", "Documents of the run by state (from the database)",
                                  labels=["state"])
        for state, n in counts.items():
            depth.add_metric([state], n)
        yield depth
        active_family = GaugeMetricFamily("docmill_workers_active", "Workers of the run heartbeating now")
        active_family.add_metric([], active)
        yield active_family


class _HealthHandler(BaseHTTPRequestHandler):
    """``/healthz``: the process answers. ``/readyz``: database reachable, schema current, model loadable."""

    endpoints: Endpoints

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/healthz":
            self._answer(200, {"status": "alive", "worker_id": self.endpoints.worker.worker_id})
        elif self.path.split("?")[0] == "/readyz":
            ready, checks = self.endpoints.readiness()
            self._answer(200 if ready else 503, {"ready": ready, "checks": checks})
        else:
            self._answer(404, {"error": "use /healthz or /readyz"})

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log: stay quiet."""


class Endpoints:
    """The /metrics and health servers of one worker process."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self._servers: list[Any] = []
        self._ready: tuple[float, bool, dict[str, Any]] | None = None
        self._ready_lock = threading.Lock()

    def start(self, metrics_port: int, health_port: int, addr: str = "0.0.0.0") -> Endpoints:
        """Start both servers in daemon threads; port 0 picks a free port (logged)."""
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkerCollector(self.worker))
        server, _thread = start_http_server(metrics_port, addr=addr, registry=registry)
        self._servers.append(server)
        self.metrics_port = int(server.server_port)
        handler = type("Handler", (_HealthHandler,), {"endpoints": self})
        health = ThreadingHTTPServer((addr, health_port), handler)
        health.daemon_threads = True
        threading.Thread(target=health.serve_forever, name="docmill-health", daemon=True).start()
        self._servers.append(health)
        self.health_port = int(health.server_address[1])
        log.info("metrics on http://%s:%d/metrics, health on http://%s:%d/healthz and /readyz",
                 addr, self.metrics_port, addr, self.health_port)
        return self

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Database reachable, schema at this code's version, model loaded or loadable (cached briefly)."""
        with self._ready_lock:
            if self._ready and time.monotonic() - self._ready[0] < READY_CACHE_SECONDS:
                return self._ready[1], self._ready[2]
            checks: dict[str, Any] = {}
            from docmill.backends import open_backend
            from docmill.backends.base import SCHEMA_VERSION

            w = self.worker
            try:
                backend = open_backend(w.db_url, w.config)
                try:
                    version = backend.schema_version()
                finally:
                    backend.close()
                checks["database"] = "reachable"
                checks["schema"] = ("current" if version == SCHEMA_VERSION
                                    else f"version {version}, this docmill needs {SCHEMA_VERSION}")
            except Exception as exc:
                checks["database"] = redact(f"unreachable: {exc}")
                checks["schema"] = "unknown"
            checks["model"] = _model_state(w)
            ready = (checks["database"] == "reachable" and checks["schema"] == "current"
                     and checks["model"] in ("loaded", "loadable"))
            self._ready = (time.monotonic(), ready, checks)
            return ready, checks

    def close(self) -> None:
        """Stop both servers."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()


def _model_state(worker: Any) -> str:
    """``loaded`` once the worker loaded its model; ``loadable`` when it can (the packaged file is there,
    or the provider loads lazily over the network); otherwise what is missing."""
    pipeline = worker.pipeline
    if pipeline is not None and getattr(pipeline, "_embedder", None) is not None:
        return "loaded"
    if worker.config.embedding.provider != "local":
        return "loadable"
    from docmill.embedders.local_onnx import model_file, tokenizer_file

    try:
        missing = [str(p) for p in (model_file(), tokenizer_file()) if not p.is_file()]
    except Exception as exc:
        return f"missing: {exc}"
    return "loadable" if not missing else f"missing: {', '.join(missing)}"


def serve_endpoints(worker: Any, index: int = 0) -> Endpoints | None:
    """Start /metrics and health for a worker when ``monitoring.enabled`` (ports offset by ``index``)."""
    mon = worker.config.monitoring
    if not mon.enabled:
        return None
    metrics_port = mon.metrics_port + index if mon.metrics_port else 0
    health_port = mon.health_check_port + index if mon.health_check_port else 0
    try:
        return Endpoints(worker).start(metrics_port, health_port)
    except OSError as exc:
        log.error("cannot serve metrics/health on ports %d/%d: %s (the worker runs on without them)",
                  metrics_port, health_port, exc)
        return None
