"""Operations on a run's queue: dead letters, retries, claims, traces, shutdown and housekeeping.

Everything here reads and writes through the Backend Protocol, so it works the same on SQLite and
PostgreSQL and every machine sees the same truth. The CLI commands are thin wrappers around it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from docmill.backends.base import Backend, DocumentRow, EventRow
from docmill.config import Config, real_path
from docmill.errors import DocmillError
from docmill.models import DocState

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)

# Message normalisation for grouping: quoted parts, paths, hex ids and numbers become stand-ins.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),
    (re.compile(r"(?:[A-Za-z]:)?(?:[\w.~-]*/)+[\w.~-]*"), "<path>"),
    (re.compile(r"\b[\w-]+\.[A-Za-z][A-Za-z0-9]{0,4}\b"), "<file>"),
    (re.compile(r"\b[0-9a-f]{8,}\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]


def parse_duration(text: str) -> float:
    """``30d``, ``1h``, ``90m``, ``45s`` or a number of seconds, in seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise DocmillError(f"not a duration: {text!r} (use e.g. 30d, 12h, 90m, 45s)")
    return float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]


def normalize_message(message: str | None) -> str:
    """The shape of an error message, so that messages differing only in names and numbers group."""
    text = " ".join((message or "").split())
    for pattern, stand_in in _PATTERNS:
        text = pattern.sub(stand_in, text)
    return text[:200]


@dataclass
class FailureGroup:
    """Dead documents sharing an error class and message pattern."""

    error_class: str
    pattern: str
    count: int
    example_id: int
    example_uri: str
    example_message: str
    document_ids: list[int] = field(default_factory=list)


def analyze(rows: Sequence[DocumentRow]) -> list[FailureGroup]:
    """Group dead documents by error class and message pattern, biggest group first."""
    groups: dict[tuple[str, str], FailureGroup] = {}
    for r in rows:
        key = (r.error_class or "unknown", normalize_message(r.last_error))
        group = groups.get(key)
        if group is None:
            group = groups[key] = FailureGroup(key[0], key[1], 0, r.id, r.uri, r.last_error or "")
        group.count += 1
        if len(group.document_ids) < 20:
            group.document_ids.append(r.id)
    return sorted(groups.values(), key=lambda g: (-g.count, g.error_class, g.pattern))


def resolve(backend: Backend, run_id: str, idents: Sequence[str]) -> tuple[list[int], list[str]]:
    """Document ids named by id, URI, key or a path (made absolute); also the names that matched nothing."""
    ids: list[int] = []
    missing: list[str] = []
    for ident in idents:
        names = [ident]
        if not ident.isdigit():
            names.append(real_path(ident))
        found = backend.find_document_ids(run_id, names)
        if found:
            ids.extend(i for i in found if i not in ids)
        else:
            missing.append(ident)
    return ids, missing


@dataclass
class RequeueReport:
    """What a retry did: documents put back to pending, and the ones left as they were (with why)."""

    requeued: list[int]
    skipped: dict[str, str]
    run_state: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def requeue(backend: Backend, run_id: str, idents: Sequence[str] = (), *, all_dead: bool = False) -> RequeueReport:
    """Put dead (or waiting) documents back to pending with their attempts reset; their history stays."""
    run = backend.get_run(run_id)
    if run is None:
        raise DocmillError(f"no run {run_id} in this store")
    skipped: dict[str, str] = {}
    if all_dead:
        ids = [d.id for d in backend.documents(run_id, DocState.DEAD, None)]
    else:
        ids, missing = resolve(backend, run_id, idents)
        skipped.update({m: "no such document in this run" for m in missing})
    moved = backend.requeue(run_id, ids) if ids else []
    for row in backend.document_rows([i for i in ids if i not in moved]):
        skipped[str(row.id)] = (f"is {row.state}" + (" (use `docmill reset-claims` to take it back)"
                                                      if row.state == DocState.CLAIMED else ""))
    return RequeueReport(moved, skipped, run.state)


# -- trace ------------------------------------------------------------------------------------
_WHY = {
    "discovered": "found by the leader's discovery pass and queued",
    "changed": "its version (size/mtime) changed since it was processed, so it was queued again",
    "claimed": "leased by a worker",
    "done": "processed: chunks replaced and the document marked done",
    "unchanged": "content hash identical to the stored one: chunks kept, nothing embedded",
    "retry": "failed; will be retried after a delay",
    "dead": "moved to the dead-letter queue",
    "released": "given back unprocessed by a stopping worker (no attempt spent)",
    "fenced": "the worker's result was rejected because its lease had been lost or reset",
    "lost": "the holding worker stopped renewing its lease (killed, crashed or stalled); taken over",
    "removed": "no longer in its source: deleted with its chunks",
    "requeued": "put back to pending by an operator (attempts reset)",
    "reset": "claim released by an operator (reset-claims / stop --force)",
    "purged": "deleted from the dead-letter queue by an operator",
}


@dataclass
class TraceStep:
    """One event of a document's story, with what it means."""

    at: float
    kind: str
    worker_id: str | None
    detail: dict[str, Any]
    meaning: str


@dataclass
class Trace:
    """The whole story of one document."""

    document_id: int
    document: dict[str, Any] | None  # None when it was removed or purged
    relationships: int
    steps: list[TraceStep]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def _step(e: EventRow) -> TraceStep:
    return TraceStep(at=e.at, kind=e.kind, worker_id=e.worker_id, detail=e.detail, meaning=_WHY.get(e.kind, e.kind))


def trace(backend: Backend, run_id: str, ident: str) -> list[Trace]:
    """The story of every document ``ident`` names (an id, a URI, a key or a path)."""
    ids, _missing = resolve(backend, run_id, [ident])
    if not ids:
        raise DocmillError(f"no document {ident!r} in run {run_id} (give a document id, its URI or its path; "
                           "events older than monitoring.event_retention_days are gone)")
    rows = {r.id: r for r in backend.document_rows(ids)}
    return [Trace(document_id=i, document=asdict(rows[i]) if i in rows else None,
                  relationships=backend.relationship_count(i) if i in rows else 0,
                  steps=[_step(e) for e in backend.events(i)]) for i in ids]


# -- shutdown ----------------------------------------------------------------------------------
@dataclass
class FleetState:
    """Workers of a run that are still alive and the documents the run still has claimed."""

    alive: list[str]
    claimed: int


def fleet_state(backend: Backend, config: Config, run_id: str) -> FleetState:
    """Live workers (running and heartbeating) and claimed documents of the run."""
    from docmill.stats import worker_state

    interval = config.workers.heartbeat_interval
    alive = [w.worker_id for w in backend.worker_rows(run_id) if worker_state(w, interval) == "running"]
    return FleetState(alive, backend.counts(run_id)[DocState.CLAIMED])


def wait_for_shutdown(backend: Backend, config: Config, run_id: str, timeout: float,
                      progress: Callable[[FleetState], None]) -> bool:
    """Wait until no worker of the run is alive; True when that happened within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        state = fleet_state(backend, config, run_id)
        progress(state)
        if not state.alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


# -- housekeeping -------------------------------------------------------------------------------
def housekeeping(backend: Backend, config: Config) -> dict[str, int]:
    """Enforce the event retention and drop the bookkeeping of long-finished runs (run after finalize)."""
    done: dict[str, int] = {}
    try:
        done["events_pruned"] = backend.prune_events(config.monitoring.event_retention_days * 86400)
        if config.workers.cleanup_completed_jobs:
            cleaned = backend.cleanup_finished_runs(config.workers.cleanup_after_hours * 3600)
            done.update({f"cleaned_{k}": v for k, v in cleaned.items()})
    except DocmillError as exc:
        # Housekeeping must never fail a run that finished its real work.
        log.warning("housekeeping skipped: %s", exc)
    if any(done.values()):
        log.info("housekeeping: %s", ", ".join(f"{k} {v}" for k, v in done.items() if v))
    return done


class CircuitBreaker:
    """Pauses a worker whose documents keep failing for reasons not their own (the embedding API is
    down, the model cannot load), instead of letting it burn the queue's retries.

    ``workers.circuit_breaker_threshold`` failures in a row trip it; each trip sleeps twice as long as
    the previous one (from ``retry_delay``, capped by ``max_retry_delay``) and one success resets it.
    """

    def __init__(self, config: Config) -> None:
        self.threshold = config.workers.circuit_breaker_threshold
        self.base = max(config.workers.retry_delay, 0.1)  # retry_delay 0 must still pause
        self.cap = max(config.workers.max_retry_delay, self.base)
        self.trips = 0
        self.paused_seconds = 0.0

    def check(self, consecutive_failures: int, stop: threading.Event, should_stop: Callable[[], bool],
              slice_seconds: float) -> None:
        """Pause (in slices, so a stop or shutdown is still obeyed) when the breaker trips."""
        if not self.threshold or consecutive_failures < self.threshold:
            if consecutive_failures == 0:
                self.trips = 0
            return
        pause = min(self.base * 2 ** self.trips, self.cap)
        self.trips += 1
        log.warning("circuit breaker open: %d documents failed in a row (workers.circuit_breaker_threshold "
                    "= %d); pausing this worker %.1f s before claiming again", consecutive_failures,
                    self.threshold, pause)
        deadline = time.monotonic() + pause
        started = time.monotonic()
        while (left := deadline - time.monotonic()) > 0 and not stop.wait(min(left, slice_seconds)):
            if should_stop():
                break
        self.paused_seconds += time.monotonic() - started
