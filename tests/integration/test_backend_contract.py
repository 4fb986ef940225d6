"""The one behavioural suite of the Backend Protocol, run on SQLite and on PostgreSQL.

Every queue and store rule of DESIGN.md §3 is checked here on both backends: a behaviour that
differs between them is a bug in one of them. Leases are made short (0.2 s) so that expiry
can be reached with a short sleep.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from typing import Any

import numpy as np
import pytest

from docmill.backends import open_backend
from docmill.backends.base import Backend, ClaimedDocument, DocumentResult, Relationship
from docmill.config import Config
from docmill.errors import StoreError
from docmill.models import Chunk, DocumentRef

RUN = "run-a"
OTHER_RUN = "run-b"
DIM = 8
SHORT = 0.2  # seconds: a lease that a test lets lapse
LONG = 60.0  # seconds: a lease that must not lapse during a test


# -- helpers ---------------------------------------------------------------------------------
def rows(backend: Backend, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run a read-only SQL query (``?`` placeholders) on either backend's own connection."""
    conn = backend.conn  # type: ignore[attr-defined]
    if backend.url.startswith("sqlite"):
        return [tuple(r) for r in conn.execute(query, params).fetchall()]
    with conn.transaction():
        return [tuple(r) for r in conn.execute(query.replace("?", "%s"), params).fetchall()]


def outcomes(backend: Backend, doc_id: int) -> list[str | None]:
    """The attempts history of a document, oldest first."""
    history = rows(backend, "SELECT outcome FROM attempts WHERE document_id = ? ORDER BY id", doc_id)
    return [r[0] for r in history]


def refs(n: int, *, source: str = "src", version: str = "v1", start: int = 0,
         priority: Callable[[int], int] = lambda i: 0) -> list[DocumentRef]:
    return [DocumentRef(source=source, key=f"doc{i:05d}", uri=f"/data/doc{i:05d}.md", size=100 + i,
                        version=version, priority=priority(i)) for i in range(start, start + n)]


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    vec = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vec / np.linalg.norm(vec)


def result(texts: Sequence[str], *, seed: int = 0, model: str = "model-x", dim: int = DIM,
           links: Sequence[str] = (), vectors: np.ndarray | None = None) -> DocumentResult:
    chunks = [Chunk(ordinal=i, text=t, embed_text=t, heading_path=("Top", f"Part {i}"), page=i + 1,
                    char_start=i * 100, char_end=i * 100 + len(t), token_count=len(t.split()))
              for i, t in enumerate(texts)]
    if vectors is None:
        vectors = np.vstack([unit(seed * 1000 + i, dim) for i in range(len(texts))]) if texts else \
            np.zeros((0, dim), dtype=np.float32)
    hashes = [f"th-{seed}-{i}" for i in range(len(texts))]
    return DocumentResult(content_hash=f"hash-{seed}", title=f"Title {seed}", mime="text/markdown",
                          chunks=chunks, vectors=vectors, text_hashes=hashes, model_id=model,
                          links=list(links), metadata={"seed": seed})


def enqueue(backend: Backend, n: int, run_id: str = RUN, **kwargs: Any) -> None:
    backend.open_run(run_id, "{}")
    backend.upsert_documents(run_id, refs(n, **kwargs), 1)


def claim_one(backend: Backend, worker: str = "w1", lease: float = LONG, max_attempts: int = 3,
              run_id: str = RUN) -> ClaimedDocument:
    docs = backend.claim(run_id, worker, 1, lease, max_attempts)
    assert len(docs) == 1
    return docs[0]


def state_of(backend: Backend, doc_id: int) -> str:
    return rows(backend, "SELECT state FROM documents WHERE id = ?", doc_id)[0][0]


def drain(backend: Backend, run_id: str = RUN) -> None:
    """Claim and complete every document of the run, then finish discovery pass 1."""
    while docs := backend.claim(run_id, "drainer", 50, LONG, 3):
        for d in docs:
            assert backend.complete(d, result([f"text of {d.key}"], seed=d.id))
    backend.finish_discovery(run_id, 1)


# -- schema and runs -------------------------------------------------------------------------
def test_init_schema_is_idempotent(backend: Backend) -> None:
    backend.init_schema()
    backend.init_schema()
    assert backend.list_runs() == []


def test_schema_newer_than_code_is_refused(backend: Backend) -> None:
    conn = backend.conn  # type: ignore[attr-defined]
    if backend.url.startswith("sqlite"):
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    else:
        with conn.transaction():
            conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    with pytest.raises(StoreError, match=r"schema version 999, newer than this docmill"):
        backend.init_schema()


def test_open_run_creates_joins_and_reopens(backend: Backend) -> None:
    created = backend.open_run(RUN, '{"a": 1}')
    assert (created.state, created.discovery_gen, created.discovered_gen) == ("ingesting", 1, 0)
    assert created.config_json == '{"a": 1}' and not created.shutdown_requested
    assert created.created_at == pytest.approx(time.time(), abs=60)

    joined = backend.open_run(RUN, '{"a": 1}')
    assert joined.discovery_gen == 1, "joining an ingesting run must not start another discovery pass"

    backend.upsert_documents(RUN, refs(2), 1)
    drain(backend)
    assert backend.try_begin_finalize(RUN, "w1", LONG)
    assert backend.complete_finalize(RUN, "w1", [], "fp")
    assert backend.get_run(RUN).state == "complete"  # type: ignore[union-attr]

    reopened = backend.open_run(RUN, '{"a": 1}')
    assert (reopened.state, reopened.discovery_gen, reopened.discovered_gen) == ("ingesting", 2, 1)
    assert backend.open_run(RUN, '{"a": 1}').discovery_gen == 2


def test_open_run_clears_a_shutdown_request(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    backend.request_shutdown(RUN)
    assert backend.get_run(RUN).shutdown_requested  # type: ignore[union-attr]
    run = backend.open_run(RUN, "{}")
    assert not run.shutdown_requested and run.discovery_gen == 2


def test_get_and_list_runs(backend: Backend) -> None:
    assert backend.get_run("nope") is None
    backend.open_run(RUN, "{}")
    time.sleep(0.01)
    backend.open_run(OTHER_RUN, "{}")
    assert [r.run_id for r in backend.list_runs()] == [OTHER_RUN, RUN]


def test_finish_discovery_only_moves_forward(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    backend.finish_discovery(RUN, 3)
    backend.finish_discovery(RUN, 2)
    assert backend.get_run(RUN).discovered_gen == 3  # type: ignore[union-attr]


# -- leadership ------------------------------------------------------------------------------
def test_leadership_take_renew_refuse_lapse_release(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    assert backend.acquire_leadership(RUN, "w1", SHORT)
    run = backend.get_run(RUN)
    assert run.leader_id == "w1" and run.leader_expires_at > time.time() - 1  # type: ignore[union-attr,operator]
    assert not backend.acquire_leadership(RUN, "w2", SHORT), "a live lease is refused to others"
    assert backend.acquire_leadership(RUN, "w1", SHORT), "the holder renews"
    time.sleep(SHORT + 0.1)
    assert backend.acquire_leadership(RUN, "w2", LONG), "a lapsed lease is taken over"
    assert not backend.acquire_leadership(RUN, "w1", LONG)
    backend.release_leadership(RUN, "w1")  # not the holder: no effect
    assert backend.get_run(RUN).leader_id == "w2"  # type: ignore[union-attr]
    backend.release_leadership(RUN, "w2")
    assert backend.get_run(RUN).leader_id is None  # type: ignore[union-attr]
    assert backend.acquire_leadership(RUN, "w1", LONG), "a released lease is free at once"


# -- discovery -------------------------------------------------------------------------------
def test_source_versions_follow_every_write_to_the_store(backend: Backend) -> None:
    # A process may keep what it read between re-runs; any write, on this connection or another
    # one (another process), must show in the next listing.
    backend.open_run(RUN, "{}")
    backend.upsert_documents(RUN, refs(3), 1)
    assert backend.source_versions(RUN, "src", 10)["doc00000"][0] == "v1"  # type: ignore[index]
    assert backend.source_versions(RUN, "src", 10) == backend.stored_versions(RUN, "src", ["doc00000", "doc00001",
                                                                                          "doc00002"])
    backend.upsert_documents(RUN, refs(1, version="v2"), 2)
    assert backend.source_versions(RUN, "src", 10)["doc00000"][0] == "v2"  # type: ignore[index]
    with closing(open_backend(backend.url, Config())) as other:
        other.upsert_documents(RUN, refs(1, version="v3") + refs(1, start=7), 3)
    listing = backend.source_versions(RUN, "src", 10)
    assert listing is not None and listing["doc00000"][0] == "v3" and "doc00007" in listing


def test_chunk_count_follows_every_write_to_the_store(backend: Backend) -> None:
    # Kept between calls like the listing above: a no-change re-run's summary must still be exact.
    enqueue(backend, 2)
    assert backend.chunk_count(RUN) == 0
    assert backend.complete(claim_one(backend), result(["one", "two", "three"], seed=1))
    assert backend.chunk_count(RUN) == 3
    with closing(open_backend(backend.url, Config())) as other:
        assert other.complete(claim_one(other, "w2"), result(["four"], seed=2))
        assert other.chunk_count(RUN) == 4
    assert backend.chunk_count(RUN) == 4
    assert backend.remove_unseen(RUN, "src", 2) and backend.chunk_count(RUN) == 0


def test_upsert_counts_new_changed_unchanged(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    first = backend.upsert_documents(RUN, refs(5), 1)
    assert (first.new, first.changed, first.unchanged) == (5, 0, 0)
    again = backend.upsert_documents(RUN, refs(5), 1)
    assert (again.new, again.changed, again.unchanged) == (0, 0, 5)
    mixed = backend.upsert_documents(RUN, refs(2, version="v2") + refs(4, start=2), 2)
    assert (mixed.new, mixed.changed, mixed.unchanged) == (1, 2, 3)
    assert backend.count_source_documents(RUN, "src") == 6
    assert backend.count_source_documents(RUN, "other") == 0
    listing = backend.source_versions(RUN, "src", 6)
    assert listing is not None and sorted(listing) == [f"doc{i:05d}" for i in range(6)]
    assert listing["doc00000"] == ("v2", "pending", "/data/doc00000.md")
    assert listing == backend.stored_versions(RUN, "src", sorted(listing))
    assert backend.source_versions(RUN, "src", 5) is None, "more than the limit: the caller goes batch by batch"
    assert backend.source_versions(RUN, "other", 5) == {}
    assert backend.upsert_documents(RUN, [], 2).new == 0
    with pytest.raises(ValueError):
        backend.upsert_documents(RUN, refs(1) + refs(1, source="other"), 2)


def test_upsert_tolerates_a_key_listed_twice(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    twice = [*refs(1), DocumentRef(source="src", key="doc00000", uri="/moved.md", version="v9")]
    counts = backend.upsert_documents(RUN, twice, 1)
    assert counts.new == 2  # each listing counts, as the reference does
    docs = backend.documents(RUN, None, None)
    assert len(docs) == 1 and docs[0].uri == "/moved.md"


def test_upsert_without_marking_writes_only_new_and_changed(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    backend.upsert_documents(RUN, refs(4), 1)
    moved = DocumentRef(source="src", key="doc00003", uri="/elsewhere/doc00003.md", size=103, version="v1")
    counts = backend.upsert_documents(RUN, [*refs(1, version="v2"), *refs(2, start=1), moved, *refs(1, start=4)],
                                      2, mark_seen=False)
    assert (counts.new, counts.changed, counts.unchanged) == (1, 1, 3)
    stored = {r[0]: r[1:] for r in rows(backend, "SELECT doc_key, version, uri, state FROM documents")}
    assert stored["doc00000"][0] == "v2" and stored["doc00004"][2] == "pending"
    assert stored["doc00003"][1] == "/elsewhere/doc00003.md", "a document found at a new path is rewritten"
    # Unmarked documents were not stamped by pass 2: only a marking pass protects them from removal.
    assert sorted(backend.remove_unseen(RUN, "src", 2)) == ["/data/doc00001.md", "/data/doc00002.md"]


def test_changed_version_sends_finished_documents_back_to_pending(backend: Backend) -> None:
    enqueue(backend, 3)
    done = claim_one(backend)
    assert backend.complete(done, result(["alpha"], seed=1))
    dead = claim_one(backend)
    assert backend.fail(dead, "CorruptDocumentError", "broken", None)
    pending_id = backend.documents(RUN, "pending", None)[0].id

    backend.upsert_documents(RUN, refs(3, version="v2"), 2)
    by_id = {d.id: d for d in backend.documents(RUN, None, None)}
    assert by_id[done.id].state == "pending" and by_id[done.id].attempts == 0
    assert by_id[dead.id].state == "pending" and by_id[dead.id].attempts == 0
    assert by_id[pending_id].state == "pending"
    assert backend.chunk_count(RUN) == 1, "the old version stays searchable until the new one is stored"
    assert len(backend.claim(RUN, "w1", 10, LONG, 3)) == 3


def test_version_change_while_claimed_requeues_after_completion(backend: Backend) -> None:
    enqueue(backend, 1)
    doc = claim_one(backend)
    backend.upsert_documents(RUN, refs(1, version="v2"), 2)
    assert state_of(backend, doc.id) == "claimed", "a held document is not taken from its worker"
    assert backend.complete(doc, result(["old text"], seed=1))
    row = backend.documents(RUN, None, None)[0]
    assert (row.state, row.attempts) == ("pending", 0), "the stored version is stale: do it again"
    again = claim_one(backend)
    assert again.version == "v2"


def test_remove_unseen_deletes_documents_and_chunks(backend: Backend) -> None:
    enqueue(backend, 4)
    for d in backend.claim(RUN, "w1", 4, LONG, 3):
        assert backend.complete(d, result([f"text {d.key}"], seed=d.id))
    backend.upsert_documents(RUN, refs(2), 2)
    removed = backend.remove_unseen(RUN, "src", 2)
    assert sorted(removed) == ["/data/doc00002.md", "/data/doc00003.md"]
    assert backend.count_source_documents(RUN, "src") == 2
    assert backend.chunk_count(RUN) == 2
    assert backend.remove_unseen(RUN, "src", 2) == []


# -- claims ----------------------------------------------------------------------------------
def test_claim_respects_limit_priority_and_counts_attempts(backend: Backend) -> None:
    enqueue(backend, 10, priority=lambda i: 5 if i in (7, 3) else 0)
    first = backend.claim(RUN, "w1", 3, LONG, 3)
    assert [d.key for d in first] == ["doc00000", "doc00003", "doc00007"]  # sorted by id on return
    assert all(d.attempts == 1 and d.run_id == RUN and d.version == "v1" for d in first)
    assert len({d.lease_token for d in first}) == 3
    rest = backend.claim(RUN, "w2", 100, LONG, 3)
    assert len(rest) == 7 and not {d.id for d in rest} & {d.id for d in first}
    assert backend.claim(RUN, "w3", 5, LONG, 3) == []
    holders = dict(rows(backend, "SELECT id, claimed_by FROM documents"))
    assert {holders[d.id] for d in first} == {"w1"} and {holders[d.id] for d in rest} == {"w2"}
    assert backend.counts(RUN) == {"pending": 0, "claimed": 10, "done": 0, "dead": 0}
    assert outcomes(backend, first[0].id) == [None], "each claim opens one history row"


def test_claim_takes_only_its_run(backend: Backend) -> None:
    enqueue(backend, 2)
    enqueue(backend, 2, run_id=OTHER_RUN)
    docs = backend.claim(RUN, "w1", 10, LONG, 3)
    assert {d.run_id for d in docs} == {RUN} and len(docs) == 2


def test_concurrent_claimers_never_share_a_document(backend: Backend,
                                                    open_store: Callable[[], Backend]) -> None:
    enqueue(backend, 1000)
    stores = [open_store() for _ in range(4)]
    claimed: list[list[int]] = [[] for _ in stores]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def work(i: int) -> None:
        try:
            barrier.wait()  # all start together, so the claims really overlap
            while docs := stores[i].claim(RUN, f"w{i}", 10, LONG, 3):
                claimed[i].extend(d.id for d in docs)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    every = Counter(i for ids in claimed for i in ids)
    assert len(every) == 1000 and set(every.values()) == {1}, "every document claimed exactly once"
    assert rows(backend, "SELECT count(*) FROM attempts")[0][0] == 1000


def test_expired_lease_is_reclaimed_by_another_worker(backend: Backend) -> None:
    enqueue(backend, 1)
    first = claim_one(backend, "w1", lease=SHORT)
    assert backend.claim(RUN, "w2", 1, LONG, 3) == [], "a live lease is not taken"
    time.sleep(SHORT + 0.1)
    second = claim_one(backend, "w2")
    assert second.id == first.id and second.attempts == 2 and second.lease_token != first.lease_token
    assert outcomes(backend, first.id) == ["lost", None]
    assert not backend.complete(first, result(["late"], seed=9)), "the first holder is fenced off"
    assert backend.complete(second, result(["on time"], seed=2))
    assert outcomes(backend, first.id) == ["fenced", "done"]


def test_exhausted_expired_claims_are_dead_lettered(backend: Backend) -> None:
    enqueue(backend, 1)
    for attempt in (1, 2):
        doc = claim_one(backend, f"w{attempt}", lease=SHORT, max_attempts=2)
        assert doc.attempts == attempt
        time.sleep(SHORT + 0.1)
    assert backend.claim(RUN, "w3", 1, LONG, 2) == [], "a poison document is not claimed a third time"
    row = backend.documents(RUN, None, None)[0]
    assert (row.state, row.error_class, row.attempts) == ("dead", "WorkerLost", 2)
    assert "2 time(s)" in (row.last_error or "")
    assert outcomes(backend, row.id) == ["lost", "lost"]
    assert backend.counts(RUN)["dead"] == 1


def test_extend_leases_returns_only_held_tokens(backend: Backend) -> None:
    enqueue(backend, 3)
    a, b, c = backend.claim(RUN, "w1", 3, SHORT, 3)
    assert backend.complete(c, result(["gone"], seed=3))
    held = backend.extend_leases([a.lease_token, b.lease_token, c.lease_token, "no-such-token"], LONG)
    assert held == {a.lease_token, b.lease_token}
    assert backend.extend_leases([], LONG) == set()
    time.sleep(SHORT + 0.1)
    assert backend.claim(RUN, "w2", 3, LONG, 3) == [], "extended leases outlive their first expiry"


def test_lost_lease_is_not_extended(backend: Backend) -> None:
    enqueue(backend, 1)
    first = claim_one(backend, "w1", lease=SHORT)
    time.sleep(SHORT + 0.1)
    second = claim_one(backend, "w2")
    assert backend.extend_leases([first.lease_token], LONG) == set()
    assert backend.extend_leases([second.lease_token], LONG) == {second.lease_token}


# -- completion and fencing ------------------------------------------------------------------
def test_fenced_completion_leaves_the_new_owners_chunks(backend: Backend) -> None:
    enqueue(backend, 1)
    zombie = claim_one(backend, "zombie", lease=SHORT)
    time.sleep(SHORT + 0.1)
    owner = claim_one(backend, "owner")
    assert backend.complete(owner, result(["owner chunk one", "owner chunk two"], seed=1))
    assert not backend.complete(zombie, result(["zombie chunk"], seed=2))
    assert not backend.complete_unchanged(zombie)
    assert not backend.fail(zombie, "TransientError", "late failure", 1.0)
    texts = [h.text for h in backend.text_search("owner zombie chunk", 10, None)]
    assert sorted(texts) == ["owner chunk one", "owner chunk two"]
    row = backend.documents(RUN, None, None)[0]
    assert (row.state, row.chunks, row.title) == ("done", 2, "Title 1")
    history = rows(backend, "SELECT outcome, error_class FROM attempts WHERE document_id = ? ORDER BY id",
                   owner.id)
    assert history == [("fenced", "TransientError"), ("done", None)]



def test_batched_completion_fences_each_document_on_its_own(backend: Backend) -> None:
    enqueue(backend, 3)
    zombie = claim_one(backend, "zombie", lease=SHORT)
    time.sleep(SHORT + 0.1)
    owned = backend.claim(RUN, "owner", 3, LONG, 3)
    assert [d.id for d in owned] == sorted(d.id for d in owned) and len(owned) == 3
    taken = next(d for d in owned if d.id == zombie.id)
    assert backend.complete(taken, result(["owner words"], seed=1))
    others = [d for d in owned if d.id != zombie.id]
    batch = [(zombie, result(["zombie words"], seed=2))] + \
        [(d, result([f"batch words {d.id}", "shared words"], seed=10 + d.id)) for d in others]
    assert backend.complete_many(batch) == [False, True, True]
    texts = sorted(h.text for h in backend.text_search("owner zombie batch", 10, None))
    assert texts == sorted(["owner words"] + [f"batch words {d.id}" for d in others])
    assert backend.chunk_count(RUN) == 5
    assert outcomes(backend, zombie.id) == ["fenced", "done"]
    assert {state_of(backend, d.id) for d in owned} == {"done"}
    assert backend.complete_many([]) == []

def test_batched_completion_caches_each_vector_under_its_own_model(backend: Backend) -> None:
    enqueue(backend, 2)
    a, b = backend.claim(RUN, "w", 2, LONG, 3)
    assert backend.complete_many([(a, result(["alpha"], seed=1, model="model-a")),
                                  (b, result(["beta"], seed=2, model="model-b"))]) == [True, True]
    assert set(backend.cached_vectors("model-a", ["th-1-0", "th-2-0"])) == {"th-1-0"}
    assert set(backend.cached_vectors("model-b", ["th-1-0", "th-2-0"])) == {"th-2-0"}


def test_complete_replaces_chunks_atomically(backend: Backend) -> None:
    enqueue(backend, 1)
    doc = claim_one(backend)
    assert backend.complete(doc, result(["first apple", "first banana", "first cherry"], seed=1)) is True
    assert backend.chunk_count(RUN) == 3
    backend.upsert_documents(RUN, refs(1, version="v2"), 2)
    again = claim_one(backend)
    assert backend.complete(again, result(["second apple", "second banana"], seed=2))
    assert backend.chunk_count(RUN) == 2
    hits = backend.text_search("first second", 10, None)
    assert sorted(h.text for h in hits) == ["second apple", "second banana"]
    ordinals = rows(backend, "SELECT ordinal FROM chunks WHERE document_id = ? ORDER BY ordinal", doc.id)
    assert ordinals == [(0,), (1,)]
    row = backend.documents(RUN, None, None)[0]
    assert (row.state, row.chunks, row.title) == ("done", 2, "Title 2")


def test_failed_reingestion_keeps_the_previous_version_searchable(backend: Backend) -> None:
    enqueue(backend, 1)
    assert backend.complete(claim_one(backend), result(["kept words"], seed=1))
    backend.upsert_documents(RUN, refs(1, version="v2"), 2)
    assert backend.fail(claim_one(backend), "CorruptDocumentError", "truncated", None)
    assert [h.text for h in backend.text_search("kept", 5, None)] == ["kept words"]


def test_complete_with_no_chunks(backend: Backend) -> None:
    enqueue(backend, 1)
    doc = claim_one(backend)
    assert backend.complete(doc, result([], seed=1))
    assert backend.documents(RUN, "done", None)[0].chunks == 0


def test_complete_unchanged_keeps_chunks(backend: Backend) -> None:
    enqueue(backend, 1)
    assert backend.complete(claim_one(backend), result(["stable text"], seed=1))
    backend.upsert_documents(RUN, refs(1, version="v2"), 2)  # touched, same content
    doc = claim_one(backend)
    assert doc.content_hash == "hash-1", "the claim carries the stored content hash"
    assert backend.complete_unchanged(doc)
    row = backend.documents(RUN, None, None)[0]
    assert (row.state, row.chunks) == ("done", 1)
    assert outcomes(backend, doc.id) == ["done", "unchanged"]
    assert not backend.complete_unchanged(doc), "a finished lease cannot complete twice"
    assert outcomes(backend, doc.id) == ["done", "fenced"]


# -- failures, retries, release --------------------------------------------------------------
def test_fail_with_retry_waits_before_the_next_claim(backend: Backend) -> None:
    enqueue(backend, 1)
    doc = claim_one(backend)
    assert backend.fail(doc, "TransientError", "HTTP 429", 30.0)
    row = backend.documents(RUN, None, None)[0]
    assert (row.state, row.error_class, row.last_error, row.attempts) == ("pending", "TransientError",
                                                                          "HTTP 429", 1)
    assert backend.claim(RUN, "w1", 1, LONG, 3) == [], "not claimable before its retry time"
    available = rows(backend, "SELECT available_at FROM documents WHERE id = ?", doc.id)[0][0]
    if isinstance(available, float):  # SQLite keeps epoch seconds
        assert available > time.time() + 20
    assert outcomes(backend, doc.id) == ["retry"]
    messages = rows(backend, "SELECT error_message FROM attempts WHERE document_id = ?", doc.id)
    assert messages == [("HTTP 429",)]


def test_fail_with_zero_delay_is_retried_and_then_dead_lettered(backend: Backend) -> None:
    enqueue(backend, 1)
    first = claim_one(backend)
    assert backend.fail(first, "TransientError", "timeout", 0.0)
    second = claim_one(backend)
    assert second.attempts == 2
    assert backend.fail(second, "TransientError", "timeout again", None)
    row = backend.documents(RUN, None, None)[0]
    assert (row.state, row.last_error) == ("dead", "timeout again")
    assert outcomes(backend, first.id) == ["retry", "dead"]
    assert backend.claim(RUN, "w1", 1, LONG, 3) == []


def test_permanent_failure_goes_straight_to_dead(backend: Backend) -> None:
    enqueue(backend, 1)
    doc = claim_one(backend)
    assert backend.fail(doc, "UnsupportedFormatError", "not a document", None)
    row = backend.documents(RUN, "dead", None)[0]
    assert (row.error_class, row.attempts) == ("UnsupportedFormatError", 1)


def test_release_does_not_spend_an_attempt(backend: Backend) -> None:
    enqueue(backend, 3)
    held = backend.claim(RUN, "w1", 3, LONG, 3)
    assert backend.complete(held[2], result(["done"], seed=1))
    assert backend.release(held) == 2, "a finished document is not released"
    assert backend.release([]) == 0
    assert backend.counts(RUN) == {"pending": 2, "claimed": 0, "done": 1, "dead": 0}
    again = backend.claim(RUN, "w2", 3, LONG, 3)
    assert sorted(d.id for d in again) == sorted(d.id for d in held[:2])
    assert all(d.attempts == 1 for d in again), "the released claim gave its attempt back"
    assert outcomes(backend, held[0].id) == ["released", None]
    assert backend.release(held[:2]) == 0, "stale tokens release nothing"


# -- embedding cache, workers, counts --------------------------------------------------------
def test_cached_vectors_by_model_and_text_hash(backend: Backend) -> None:
    enqueue(backend, 1)
    res = result(["one", "two"], seed=4)
    assert backend.complete(claim_one(backend), res)
    found = backend.cached_vectors("model-x", ["th-4-0", "th-4-1", "th-4-0", "missing"])
    assert set(found) == {"th-4-0", "th-4-1"}
    np.testing.assert_allclose(found["th-4-1"], res.vectors[1], rtol=1e-6)
    assert found["th-4-0"].dtype == np.float32
    assert backend.cached_vectors("model-y", ["th-4-0"]) == {}
    assert backend.cached_vectors("model-x", []) == {}


def test_workers_register_beat_and_stop(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    backend.register_worker("host-1", RUN, "host", 1234, "pid:[1]")
    backend.beat_worker("host-1", 3, 10, 2)
    row = rows(backend, "SELECT run_id, host, pid, current_docs, processed, failed, stopped_at FROM workers")
    assert row == [(RUN, "host", 1234, 3, 10, 2, None)]
    backend.stop_worker("host-1")
    stopped = rows(backend, "SELECT current_docs, stopped_at FROM workers WHERE worker_id = ?", "host-1")[0]
    assert stopped[0] == 0 and stopped[1] is not None
    backend.register_worker("host-1", RUN, "host", 1234, "pid:[1]")  # the same process registering again
    assert rows(backend, "SELECT processed, stopped_at FROM workers") == [(0, None)]


def test_reregistered_worker_name_takes_the_new_host_and_pid(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    backend.register_worker("worker-1", RUN, "machine-a", 1, "pid:[1]")
    backend.register_worker("worker-1", RUN, "machine-b", 7, "pid:[1]")
    assert rows(backend, "SELECT host, pid FROM workers") == [("machine-b", 7)]


def test_a_gone_workers_claims_and_leadership_end_at_once(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    enqueue(backend, 3)
    backend.register_worker("gone", RUN, "box", 41, "pid:[9]")
    backend.register_worker("elsewhere", RUN, "box", 42, "pid:[8]")  # same host name, other PID namespace
    assert backend.acquire_leadership(RUN, "gone", LONG)
    held = backend.claim(RUN, "gone", 2, LONG, 3)
    assert backend.local_workers(RUN, "box", "pid:[9]") == [("gone", 41)]
    assert backend.claim(RUN, "w2", 3, LONG, 3)[0].id not in {d.id for d in held}  # leases still hold

    assert backend.expire_workers(RUN, ["gone"]) == 2
    taken = backend.claim(RUN, "w2", 3, LONG, 3)
    assert {d.id for d in taken} == {d.id for d in held}, "taken over now, not when the lease lapses"
    assert backend.acquire_leadership(RUN, "w2", LONG)
    lost = rows(backend, "SELECT outcome, error_message FROM attempts WHERE worker_id = ?", "gone")
    assert lost == [("lost", "worker gone (pid 41) exited while holding the document")] * 2
    assert backend.local_workers(RUN, "box", "pid:[9]") == []  # marked stopped
    assert backend.local_workers(RUN, "box", "pid:[8]") == [("elsewhere", 42)]
    assert not backend.complete(held[0], result(["late"], seed=5)), "the gone worker's lease is fenced"


def test_counts_lists_every_state(backend: Backend) -> None:
    backend.open_run(RUN, "{}")
    assert backend.counts(RUN) == {"pending": 0, "claimed": 0, "done": 0, "dead": 0}
    enqueue(backend, 4)
    a, b = backend.claim(RUN, "w1", 2, LONG, 3)
    backend.complete(a, result(["x"], seed=1))
    backend.fail(b, "PermanentError", "no", None)
    assert backend.counts(RUN) == {"pending": 2, "claimed": 0, "done": 1, "dead": 1}


# -- finalize --------------------------------------------------------------------------------
def test_finalize_waits_for_the_queue_and_discovery(backend: Backend) -> None:
    enqueue(backend, 2)
    assert not backend.try_begin_finalize(RUN, "w1", LONG), "pending documents remain"
    a, b = backend.claim(RUN, "w1", 2, LONG, 3)
    backend.complete(a, result(["a"], seed=1))
    assert not backend.try_begin_finalize(RUN, "w1", LONG), "a claimed document remains"
    backend.fail(b, "PermanentError", "bad", None)
    assert not backend.try_begin_finalize(RUN, "w1", LONG), "discovery has not finished"
    backend.finish_discovery(RUN, 1)
    assert backend.try_begin_finalize(RUN, "w1", LONG), "dead documents do not block finalize"
    assert backend.get_run(RUN).state == "finalizing"  # type: ignore[union-attr]


def test_exactly_one_concurrent_finalizer_wins(backend: Backend, open_store: Callable[[], Backend]) -> None:
    enqueue(backend, 3)
    drain(backend)
    stores = [open_store() for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    wins: list[bool] = [False] * len(stores)

    def attempt(i: int) -> None:
        barrier.wait()
        wins[i] = stores[i].try_begin_finalize(RUN, f"w{i}", LONG)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(wins) == 1
    winner = f"w{wins.index(True)}"
    loser = "w0" if winner != "w0" else "w1"
    assert backend.extend_finalize(RUN, winner, LONG)
    assert not backend.extend_finalize(RUN, loser, LONG)
    assert not backend.complete_finalize(RUN, loser, [], "fp")


def test_complete_finalize_stores_relationships(backend: Backend) -> None:
    enqueue(backend, 3)
    drain(backend)
    ids = [d.id for d in backend.documents(RUN, None, None)]
    assert backend.try_begin_finalize(RUN, "w1", LONG)
    edges = [Relationship(ids[0], ids[1], "links_to", 1.0), Relationship(ids[1], ids[2], "similar", 0.75),
             Relationship(ids[0], ids[2], "similar", 0.5)]
    assert backend.complete_finalize(RUN, "w1", edges, "fp")
    run = backend.get_run(RUN)
    assert (run.state, run.finalize_count) == ("complete", 1)  # type: ignore[union-attr]
    assert sorted(backend.relationships(RUN), key=lambda e: (e.kind, e.source_id)) == sorted(
        edges, key=lambda e: (e.kind, e.source_id))
    assert not backend.complete_finalize(RUN, "w1", [], "fp"), "a completed run is not completed twice"

    backend.open_run(RUN, "{}")  # a re-run: the next finalize replaces the edges
    backend.finish_discovery(RUN, 2)
    assert backend.try_begin_finalize(RUN, "w2", LONG)
    assert backend.complete_finalize(RUN, "w2", edges[:1], "fp")
    assert backend.relationships(RUN) == edges[:1]
    assert backend.get_run(RUN).finalize_count == 2  # type: ignore[union-attr]


def test_finalize_fingerprint_moves_only_when_done_documents_change(backend: Backend) -> None:
    enqueue(backend, 3)
    drain(backend)
    first, stored = backend.finalize_fingerprint(RUN)
    assert stored is None
    assert backend.try_begin_finalize(RUN, "w1", LONG)
    ids = [d.id for d in backend.documents(RUN, None, None)]
    edges = [Relationship(ids[0], ids[1], "similar", 0.9)]
    assert backend.complete_finalize(RUN, "w1", edges, first)
    assert backend.finalize_fingerprint(RUN) == (first, first)

    backend.open_run(RUN, "{}")  # a re-run that changes nothing: edges are kept with None
    backend.finish_discovery(RUN, 2)
    assert backend.finalize_fingerprint(RUN) == (first, first)
    assert backend.try_begin_finalize(RUN, "w2", LONG)
    assert backend.complete_finalize(RUN, "w2", None, first)
    assert backend.relationships(RUN) == edges

    backend.upsert_documents(RUN, refs(1, version="v2"), 3)  # one document changes and is done again
    time.sleep(0.01)
    drain(backend)
    changed, stored = backend.finalize_fingerprint(RUN)
    assert (changed != first, stored) == (True, first)
    backend.upsert_documents(RUN, refs(1, start=3), 4)  # one more document
    drain(backend)
    assert backend.finalize_fingerprint(RUN)[0] not in (first, changed)


def test_lapsed_finalize_is_taken_over(backend: Backend) -> None:
    enqueue(backend, 1)
    drain(backend)
    assert backend.try_begin_finalize(RUN, "w1", SHORT)
    assert not backend.try_begin_finalize(RUN, "w2", LONG), "a live finalize is not taken"
    time.sleep(SHORT + 0.1)
    assert not backend.extend_finalize(RUN, "w2", LONG)
    assert backend.try_begin_finalize(RUN, "w2", LONG)
    assert not backend.extend_finalize(RUN, "w1", LONG)
    assert not backend.complete_finalize(RUN, "w1", [], "fp")
    assert backend.complete_finalize(RUN, "w2", [], "fp")


def test_finished_documents_and_document_vectors(backend: Backend) -> None:
    enqueue(backend, 3)
    a, b, c = backend.claim(RUN, "w1", 3, LONG, 3)
    vectors = np.vstack([unit(1), unit(2)])
    backend.complete(a, result(["a1", "a2"], seed=1, links=["doc00001", "https://x.org"], vectors=vectors))
    backend.complete(b, result([], seed=2))
    backend.fail(c, "PermanentError", "no", None)
    finished = {d.id: d for d in backend.finished_documents(RUN)}
    assert set(finished) == {a.id, b.id}
    assert finished[a.id].links == ["doc00001", "https://x.org"] and finished[b.id].links == []
    assert (finished[a.id].source, finished[a.id].key, finished[a.id].uri) == ("src", a.key, a.uri)
    ids, matrix = backend.document_vectors(RUN)
    assert ids == [a.id], "documents without chunks have no vector"
    mean = vectors.mean(axis=0)
    np.testing.assert_allclose(matrix[0], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    assert backend.document_vectors(OTHER_RUN)[1].shape == (0, 0)


# -- reading ---------------------------------------------------------------------------------
def test_vector_search_ranks_the_nearest_first(backend: Backend) -> None:
    enqueue(backend, 2)
    enqueue(backend, 1, run_id=OTHER_RUN)
    a, b = backend.claim(RUN, "w1", 2, LONG, 3)
    (other,) = backend.claim(OTHER_RUN, "w1", 1, LONG, 3)
    basis = np.eye(DIM, dtype=np.float32)
    near = basis[0] * 0.9 + basis[1] * 0.1
    backend.complete(a, result(["x axis", "y axis"], vectors=np.vstack([basis[0], basis[1]]), seed=1))
    backend.complete(b, result(["near x"], vectors=(near / np.linalg.norm(near))[None, :], seed=2))
    backend.complete(other, result(["other run x"], vectors=basis[0][None, :], seed=3))

    hits = backend.vector_search(basis[0], 3, [RUN])
    assert [h.text for h in hits] == ["x axis", "near x", "y axis"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[2].score == pytest.approx(0.0, abs=1e-5)
    assert hits[0].document_id == a.id and hits[0].uri == a.uri and hits[0].title == "Title 1"
    assert (hits[0].heading_path, hits[0].page, hits[0].ordinal) == (["Top", "Part 0"], 1, 0)
    assert (hits[1].char_start, hits[1].char_end) == (0, len("near x"))
    every = backend.vector_search(basis[0], 10, None)
    assert len(every) == 4 and {h.text for h in every[:2]} == {"x axis", "other run x"}
    assert [h.text for h in backend.vector_search(basis[0], 1, [OTHER_RUN])] == ["other run x"]
    assert backend.vector_search(basis[0], 5, ["no-such-run"]) == []


def test_vector_search_sees_reingested_vectors(backend: Backend) -> None:
    basis = np.eye(DIM, dtype=np.float32)
    enqueue(backend, 1)
    assert backend.complete(claim_one(backend), result(["first"], vectors=basis[0][None, :], seed=1))
    assert backend.vector_search(basis[0], 1, None)[0].score == pytest.approx(1.0, abs=1e-5)
    backend.upsert_documents(RUN, refs(1, version="v2"), 2)
    assert backend.complete(claim_one(backend), result(["second"], vectors=basis[1][None, :], seed=2))
    (hit,) = backend.vector_search(basis[0], 1, None)
    assert hit.text == "second" and hit.score == pytest.approx(0.0, abs=1e-5)


def test_vector_search_of_the_wrong_dimension_is_explained(backend: Backend) -> None:
    assert backend.vector_search(unit(1), 5, None) == [], "an empty store has no hits"
    enqueue(backend, 1)
    backend.complete(claim_one(backend), result(["x"], seed=1))
    with pytest.raises(StoreError, match="8-dimensional vectors but the query has 4"):
        backend.vector_search(unit(1, dim=4), 5, None)


def test_text_search_finds_any_of_the_words(backend: Backend) -> None:
    enqueue(backend, 2)
    enqueue(backend, 1, run_id=OTHER_RUN)
    a, b = backend.claim(RUN, "w1", 2, LONG, 3)
    (other,) = backend.claim(OTHER_RUN, "w1", 1, LONG, 3)
    backend.complete(a, result(["The quick brown fox jumps", "lazy dogs sleep all day"], seed=1))
    backend.complete(b, result(["a fox and a dog became friends"], seed=2))
    backend.complete(other, result(["foxes live in the other run"], seed=3))

    hits = backend.text_search("fox", 10, [RUN])
    assert sorted(h.text for h in hits) == ["The quick brown fox jumps", "a fox and a dog became friends"]
    assert all(h.score > 0 for h in hits)
    either = backend.text_search("sleep friends", 10, [RUN])
    assert sorted(h.text for h in either) == ["a fox and a dog became friends", "lazy dogs sleep all day"]
    assert len(backend.text_search("fox", 10, None)) == 3
    assert backend.text_search("fox!!! (quick)", 1, None)[0].text == "The quick brown fox jumps"
    assert backend.text_search("zebra", 10, None) == []
    assert backend.text_search("  ?! ", 10, None) == []


def test_documents_filters_and_chunk_count(backend: Backend) -> None:
    enqueue(backend, 4)
    enqueue(backend, 2, run_id=OTHER_RUN)
    a, b = backend.claim(RUN, "w1", 2, LONG, 3)
    backend.complete(a, result(["x", "y", "z"], seed=1))
    backend.fail(b, "PermanentError", "unreadable", None)
    every = backend.documents(None, None, None)
    assert len(every) == 6 and [d.id for d in every] == sorted(d.id for d in every)
    assert len(backend.documents(RUN, None, None)) == 4
    assert len(backend.documents(RUN, "pending", None)) == 2
    assert len(backend.documents(None, "pending", None)) == 4
    assert len(backend.documents(RUN, None, 3)) == 3
    (dead,) = backend.documents(RUN, "dead", None)
    assert (dead.last_error, dead.error_class, dead.key, dead.source) == ("unreadable", "PermanentError",
                                                                          b.key, "src")
    assert dead.updated_at == pytest.approx(time.time(), abs=60)
    (done,) = backend.documents(RUN, "done", None)
    assert (done.chunks, done.title, done.attempts, done.uri) == (3, "Title 1", 1, a.uri)
    assert backend.chunk_count(RUN) == 3 and backend.chunk_count(OTHER_RUN) == 0


def test_a_vanished_document_is_removed_only_by_its_holder_and_leaves_a_trace(backend: Backend) -> None:
    enqueue(backend, 2)
    gone, kept = backend.claim(RUN, "w1", 2, LONG, 3)
    stale = dataclasses.replace(kept, lease_token="someone-else")
    assert not backend.remove_vanished(stale, "w1"), "fenced: a token it does not hold removes nothing"
    assert backend.remove_vanished(gone, "w1")
    assert not backend.remove_vanished(gone, "w1")
    assert backend.counts(RUN) == {"pending": 0, "claimed": 1, "done": 0, "dead": 0}
    assert [d.id for d in backend.held_by(RUN, "w1")] == [kept.id]
    events = backend.events(gone.id)
    assert events[-1].kind == "removed" and "while queued" in events[-1].detail["reason"]
