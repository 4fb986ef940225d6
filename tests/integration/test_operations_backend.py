"""The operations part of the Backend Protocol (events, dead letters, claims, alerts, housekeeping),
run on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from docmill.backends.base import SCHEMA_VERSION, Backend
from docmill.config import Config
from docmill.liveness import pid_namespace
from docmill.models import DocumentRef
from docmill.ops import CircuitBreaker, analyze, housekeeping, normalize_message, requeue, trace
from docmill.stats import collect

from .test_backend_contract import LONG, RUN, SHORT, claim_one, enqueue, refs, result, rows, state_of


def kinds(backend: Backend, doc_id: int) -> list[str]:
    return [e.kind for e in backend.events(doc_id)]


def test_events_tell_a_documents_story(backend: Backend) -> None:
    enqueue(backend, 1)
    backend.acquire_leadership(RUN, "leader-1", LONG)
    backend.upsert_documents(RUN, [DocumentRef(source="src", key="doc00000", uri="/data/doc00000.md",
                                               version="v2")], 1)
    doc = claim_one(backend, "w1")
    assert backend.fail(doc, "TransientError", "timeout after 30 s", 0.0)
    doc = claim_one(backend, "w2")
    assert backend.complete(doc, result(["a", "b"], seed=1))
    events = backend.events(doc.id)
    assert [e.kind for e in events] == ["discovered", "changed", "claimed", "retry", "claimed", "done"]
    assert events[1].worker_id == "leader-1" and events[1].detail["version"] == "v2"
    assert events[2].worker_id == "w1" and events[2].detail["attempt"] == 1
    assert events[3].detail["message"] == "timeout after 30 s" and events[3].detail["state"] == "pending"
    assert events[5].worker_id == "w2" and events[5].detail["chunks"] == 2
    assert events[5].detail["content_hash"] == "hash-1" and events[5].detail["state"] == "done"
    assert all(e.at > 0 for e in events)


def test_events_of_lost_fenced_released_unchanged_and_removed(backend: Backend) -> None:
    enqueue(backend, 3)
    lost = claim_one(backend, "w1", lease=SHORT)
    time.sleep(SHORT + 0.1)
    taken = claim_one(backend, "w2")
    assert taken.id == lost.id
    assert not backend.complete(lost, result(["late"], seed=2))  # the lost holder's late completion
    assert backend.complete(taken, result(["x"], seed=3))
    assert kinds(backend, lost.id)[-4:] == ["lost", "claimed", "fenced", "done"]
    released = claim_one(backend, "w3")
    assert backend.release([released]) == 1
    assert kinds(backend, released.id)[-1] == "released"
    again = claim_one(backend, "w3")
    assert backend.complete(again, result(["y"], seed=4))
    # Same content hash on the next claim: skipped as unchanged.
    backend.upsert_documents(RUN, [DocumentRef(source="src", key=f"doc{again.id - 1:05d}",
                                               uri=f"/data/doc{again.id - 1:05d}.md", version="v3")], 1)
    redo = claim_one(backend, "w4")
    assert backend.complete_unchanged(redo)
    assert kinds(backend, redo.id)[-3:] == ["changed", "claimed", "unchanged"]
    backend.upsert_documents(RUN, refs(1, start=0), 2)
    backend.finish_discovery(RUN, 2)
    removed = backend.remove_unseen(RUN, "src", 2)
    assert len(removed) == 2
    gone = backend.find_document_ids(RUN, [removed[0]])
    assert gone and kinds(backend, gone[0])[-1] == "removed"
    assert backend.document_rows(gone) == []


def test_exhausted_lost_claims_log_lost_and_dead(backend: Backend) -> None:
    enqueue(backend, 1)
    doc = backend.claim(RUN, "w1", 1, SHORT, 1)[0]
    time.sleep(SHORT + 0.1)
    assert backend.claim(RUN, "w2", 1, LONG, 1) == []
    assert kinds(backend, doc.id)[-2:] == ["lost", "dead"]
    assert backend.events(doc.id)[-1].detail["error_class"] == "WorkerLost"


def test_requeue_resets_attempts_and_keeps_history(backend: Backend) -> None:
    enqueue(backend, 3)
    dead = [claim_one(backend, f"w{i}") for i in range(2)]
    for d in dead:
        assert backend.fail(d, "CorruptDocumentError", f"invalid JSON: line {d.id} column 3", None)
    held = claim_one(backend, "w9")
    assert backend.failure_counts(RUN) == {"CorruptDocumentError": 2}
    report = requeue(backend, RUN, [str(dead[0].id), str(held.id), "/no/such/file"])
    assert report.requeued == [dead[0].id]
    assert "claimed" in report.skipped[str(held.id)] and "/no/such/file" in report.skipped
    assert state_of(backend, dead[0].id) == "pending"
    assert rows(backend, "SELECT attempts FROM documents WHERE id = ?", dead[0].id) == [(0,)]
    assert kinds(backend, dead[0].id)[-1] == "requeued"
    assert [o for (o,) in rows(backend, "SELECT outcome FROM attempts WHERE document_id = ?", dead[0].id)] == ["dead"]
    assert requeue(backend, RUN, all_dead=True).requeued == [dead[1].id]


def test_analyze_groups_similar_messages() -> None:
    from docmill.backends.base import DocumentRow

    def row(i: int, cls: str, msg: str) -> DocumentRow:
        return DocumentRow(i, RUN, "src", f"k{i}", f"/d/{i}.json", "dead", 1, 0, None, msg, cls, 0.0)

    groups = analyze([row(1, "CorruptDocumentError", "invalid JSON: line 3 column 9 (a.json)"),
                      row(2, "CorruptDocumentError", "invalid JSON: line 70 column 1 (b.json)"),
                      row(3, "PermanentError", "cannot read /x/y/z.pdf: permission denied")])
    assert [(g.error_class, g.count) for g in groups] == [("CorruptDocumentError", 2), ("PermanentError", 1)]
    assert groups[0].example_id == 1 and groups[0].document_ids == [1, 2]
    assert normalize_message("cannot read /x/y/z.pdf: 'q'") == "cannot read <path>: '…'"


def test_purge_deletes_old_dead_documents_and_chunks(backend: Backend) -> None:
    enqueue(backend, 2)
    done = claim_one(backend)
    assert backend.complete(done, result(["keep"], seed=5))
    dead = claim_one(backend)
    assert backend.fail(dead, "UnsupportedFormatError", "unsupported format", None)
    assert backend.purge_dead(RUN, 3600) == 0
    time.sleep(0.05)
    assert backend.purge_dead(RUN, 0.01) == 1
    assert backend.document_rows([dead.id]) == []
    assert kinds(backend, dead.id)[-1] == "purged"
    assert backend.chunk_count(RUN) == 1


def test_claims_and_reset_claims(backend: Backend) -> None:
    enqueue(backend, 3)
    old = claim_one(backend, "w1")
    lapsed = claim_one(backend, "w2", lease=SHORT)
    time.sleep(SHORT + 0.1)
    fresh = claim_one(backend, "w3")
    if fresh.id == lapsed.id:  # the lapsed one may be re-claimed first; either way three claims exist
        fresh = claim_one(backend, "w3")
    claims = {c.id: c for c in backend.claims(RUN)}
    assert set(claims) >= {old.id, fresh.id}
    assert claims[old.id].worker_id == "w1" and claims[old.id].held_seconds >= SHORT
    assert backend.reset_claims(RUN, 3600, "test") == 0
    released = backend.reset_claims(RUN, SHORT, "reset-claims --older-than test")
    assert released >= 1
    assert state_of(backend, old.id) == "pending"
    assert rows(backend, "SELECT attempts FROM documents WHERE id = ?", old.id) == [(0,)]  # attempt not spent
    assert kinds(backend, old.id)[-1] == "reset"
    assert not backend.complete(old, result(["late"], seed=6))  # the holder's late completion is fenced
    held = len(backend.claims(RUN))
    assert held > 0 and backend.reset_claims(RUN, 0, "stop --force") == held
    assert backend.claims(RUN) == []


def test_alert_state_remembers_the_previous_check(backend: Backend) -> None:
    enqueue(backend, 1)
    assert backend.swap_alert_state(RUN, 0) is None
    assert backend.swap_alert_state(RUN, 3) == 0
    assert backend.swap_alert_state(RUN, 3) == 3


def test_housekeeping_prunes_events_and_finished_runs_but_keeps_chunks(backend: Backend) -> None:
    enqueue(backend, 2)
    for d in backend.claim(RUN, "w", 2, LONG, 3):
        assert backend.complete(d, result(["t"], seed=d.id))
    backend.register_worker("w", RUN, "host", 1, "pid:[1]")
    backend.finish_discovery(RUN, 1)
    assert backend.try_begin_finalize(RUN, "w", LONG)
    assert backend.complete_finalize(RUN, "w", [], "fp")
    assert backend.events(1)
    time.sleep(0.05)
    assert backend.prune_events(3600) == 0
    config = Config(workers={"cleanup_after_hours": 0.01 / 3600}, monitoring={"event_retention_days": 1})
    done = housekeeping(backend, config)
    assert done["cleaned_runs"] == 1 and done["cleaned_attempts"] == 2 and done["cleaned_workers"] == 1
    assert rows(backend, "SELECT count(*) FROM attempts") == [(0,)]
    assert rows(backend, "SELECT count(*) FROM events") == [(0,)]
    assert backend.chunk_count(RUN) == 2 and backend.counts(RUN)["done"] == 2
    enqueue(backend, 1, run_id="other")
    time.sleep(0.05)
    assert backend.prune_events(0.01) >= 1  # the retention, enforced run by run


def test_a_killed_worker_on_this_machine_shows_as_gone(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    here = socket.gethostname()
    backend.register_worker("gone-1", RUN, here, exited.pid, pid_namespace())
    backend.register_worker("alive-1", RUN, here, os.getpid(), pid_namespace())
    backend.register_worker("remote-1", RUN, "another-machine", exited.pid, pid_namespace())
    stats = collect(backend, Config(), RUN)
    assert {w.worker_id: w.state for w in stats.workers} == {"gone-1": "gone", "alive-1": "running",
                                                              "remote-1": "running"}
    assert (stats.active_workers, stats.stale_workers) == (2, 1)


def test_status_numbers(backend: Backend) -> None:
    enqueue(backend, 4)
    backend.register_worker("w1", RUN, "host", 1, "pid:[1]")
    for d in backend.claim(RUN, "w1", 2, LONG, 3):
        assert backend.complete(d, result(["t"], seed=d.id))
    dead = claim_one(backend, "w1")
    assert backend.fail(dead, "PermanentError", "bad", None)
    claim_one(backend, "w1")
    stats = collect(backend, Config(), RUN)
    assert stats["queue_depth"] == 1 and stats.failed_count == 1 and stats.counts["done"] == 2
    assert stats.completed_windows["1m"] == 2 and stats.throughput_windows["1m"] == round(2 / 60, 4)
    assert stats.avg_processing_time is not None and stats.p95_processing_time is not None
    assert stats.failures_by_class == {"PermanentError": 1}
    assert stats.active_workers == 1 and stats.workers[0].holding == ["/data/doc00003.md"]
    assert stats.oldest_claim_seconds is not None and stats.eta_seconds is not None
    assert backend.schema_version() == SCHEMA_VERSION
    assert trace(backend, RUN, "/data/doc00003.md")[0].steps[-1].kind == "claimed"
    errors = backend.recent_errors(RUN, 10)
    assert [(e.document_id, e.outcome, e.error_class) for e in errors] == [(dead.id, "dead", "PermanentError")]
    assert backend.documents(RUN, None, None, source="src") and not backend.documents(RUN, None, None, source="x")


def test_circuit_breaker_pauses_with_backoff() -> None:
    import threading

    breaker = CircuitBreaker(Config(workers={"circuit_breaker_threshold": 2, "retry_delay": 0.2,
                                             "max_retry_delay": 0.3}))
    stop = threading.Event()
    breaker.check(1, stop, lambda: False, 0.05)
    assert breaker.trips == 0
    start = time.monotonic()
    breaker.check(2, stop, lambda: False, 0.05)
    breaker.check(3, stop, lambda: False, 0.05)
    assert breaker.trips == 2 and 0.45 <= time.monotonic() - start < 2  # 0.2 then min(0.4, 0.3)
    breaker.check(0, stop, lambda: False, 0.05)
    assert breaker.trips == 0
    disabled = CircuitBreaker(Config(workers={"circuit_breaker_threshold": 0}))
    disabled.check(100, stop, lambda: False, 0.05)
    assert disabled.trips == 0
