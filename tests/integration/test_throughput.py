"""The staged pipeline against a real (fake) embedding server: batching, backpressure, the cache,
Retry-After, the HTTP embedder's errors, the shared rate limiter and the presets.

Every count is taken at the server, which sees exactly what docmill sent.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from docmill import ingest
from docmill.backends import open_backend
from docmill.backends.base import Backend
from docmill.config import Config, EmbeddingConfig
from docmill.embedders import create_embedder
from docmill.errors import PermanentError, RateLimitedError, TransientError
from docmill.ratelimit import RateLimiter
from docmill.worker import Worker
from tests.fakes.openai_server import FakeEmbeddingServer, fake_vector

SECRET = "sk-test-not-a-real-key-1234567890"


def _config(tmp: Path, server: FakeEmbeddingServer, docs: Path, **embedding: Any) -> Config:
    workers = embedding.pop("workers", {})
    chunking = embedding.pop("chunking", {})
    return Config(storage={"path": str(tmp / "store.db")}, chunking=chunking,
                  content_sources=[{"name": "docs", "path": str(docs)}],
                  embedding={"provider": "openai", "model": "text-embedding-3-small", "base_url": server.base_url,
                             "dimensions": 64, "max_batch_wait": 2000, **embedding},
                  workers={"retry_delay": 0, **workers})


def _corpus(root: Path, n: int, shared: str | None = None) -> Path:
    """``n`` one-paragraph documents (one chunk each), plus an identical paragraph in every one."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        parts = [f"Document {i} is about topic {i * 7919 % 1000} and nothing else at all."]
        if shared:
            parts.append(shared)
        (root / f"d{i:03d}.txt").write_text("\n\n".join(parts))
    return root


@pytest.fixture
def server() -> Any:
    with FakeEmbeddingServer() as srv:
        yield srv


# -- the HTTP embedder ----------------------------------------------------------------------------
@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_http_embedder_returns_the_servers_vectors_over_one_connection(api: str) -> None:
    with FakeEmbeddingServer(api_key=SECRET) as srv:
        cfg = Config(embedding={"provider": "openai", "model": "m", "base_url": srv.base_url if api == "openai"
                                else srv.ollama_url, "api_key": SECRET, "batch_size": 2,
                                **({"dimensions": 32} if api == "openai" else {})}).embedding
        embedder = create_embedder(cfg)
        vectors = embedder.embed(["alpha", "beta", "gamma"])
        dim = 32 if api == "openai" else 384
        assert vectors.shape == (3, dim)
        assert np.allclose(vectors[2], fake_vector("gamma", dim), atol=1e-6)
        assert [r.inputs for r in srv.snapshot()] == [2, 1]  # batch_size texts per request
        assert embedder.tokenizer() is None


def test_http_errors_are_sorted_and_never_show_the_key() -> None:
    with FakeEmbeddingServer(api_key=SECRET, fail_first=1, retry_after=7) as srv:
        good = Config(embedding={"provider": "openai", "base_url": srv.base_url, "api_key": SECRET}).embedding
        with pytest.raises(RateLimitedError) as limited:
            create_embedder(good).embed(["x"])
        assert limited.value.retry_after == 7
        bad = good.model_copy(update={"api_key": SECRET[:-1]})
        with pytest.raises(PermanentError, match="HTTP 401: Incorrect API key provided") as denied:
            create_embedder(bad).embed(["x"])
        assert SECRET[:-1] not in str(denied.value)
    dead = good.model_copy(update={"base_url": srv.base_url, "timeout": 1})
    with pytest.raises(TransientError, match=r"embeddings at 127\.0\.0\.1"):
        create_embedder(dead).embed(["x"])
    # (a TransientError: a server that is down is worth retrying)


# -- the staged pipeline ----------------------------------------------------------------------------
def test_batches_span_documents_and_identical_chunks_embed_once(tmp_path: Path, server: FakeEmbeddingServer) -> None:
    shared = "This disclaimer paragraph appears word for word in every single document of the corpus."
    docs = _corpus(tmp_path / "docs", 24, shared)
    # Chunks of at most 32 tokens (128 characters): each paragraph becomes its own chunk.
    summary = ingest(_config(tmp_path, server, docs, batch_size=16,
                             chunking={"max_tokens": 32, "overlap": 0}), [])
    assert summary.counts["done"] == 24 and summary.dead == 0
    texts = server.inputs()
    assert len(texts) == len(set(texts)) == 25  # 24 distinct chunks + the shared one, each sent once
    per_request = [r.inputs for r in server.snapshot()]
    assert max(per_request) == 16 and len(per_request) == 2  # 25 texts of 24 documents in two requests
    assert summary.cache_hits == 23  # the shared paragraph, for every document after the first
    assert summary.embedded_chunks == 25


def test_changed_paragraph_reembeds_only_its_chunk(tmp_path: Path, server: FakeEmbeddingServer) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    paragraphs = [f"Paragraph {p} of the handbook explains rule {p} in enough words to stand alone. " * 6
                  for p in range(5)]
    (docs / "handbook.md").write_text("\n\n".join(paragraphs))
    _corpus(docs, 5)
    cfg = _config(tmp_path, server, docs, batch_size=8)
    first = ingest(cfg, [])
    sent_first = len(server.inputs())
    assert first.embedded_chunks == sent_first > 5

    unchanged = ingest(cfg, [])  # nothing changed: nothing is sent
    assert len(server.inputs()) == sent_first and unchanged.embedded_chunks == 0

    paragraphs[2] = "Paragraph 2 was rewritten: the rule now says something completely different. " * 6
    (docs / "handbook.md").write_text("\n\n".join(paragraphs))
    second = ingest(cfg, [])
    new_texts = server.inputs()[sent_first:]
    assert second.done == 1 and second.embedded_chunks == len(new_texts)
    assert 1 <= len(new_texts) < first.embedded_chunks // 2
    assert all("rewritten" in t for t in new_texts)  # only chunks holding the changed paragraph
    assert second.cache_hits >= 1  # the handbook's other chunks came from the cache


def test_backpressure_bounds_the_chunks_a_worker_holds(tmp_path: Path) -> None:
    # A slow embedder (50 ms a request) and a corpus far larger than the budget.
    with FakeEmbeddingServer(latency=0.05) as srv:
        docs = _corpus(tmp_path / "docs", 80)
        cfg = _config(tmp_path, srv, docs, batch_size=4, max_concurrency=1,
                      workers={"claim_batch_size": 2, "prepare_threads": 1, "max_inflight_chunks": 6})
        backend = open_backend(cfg.storage.database_url(), cfg)
        backend.init_schema()
        backend.open_run(cfg.run_id(), "{}")
        backend.close()
        report = Worker(cfg, cfg.storage.database_url()).run()
    stats = report.stats
    assert stats["done"] == 80
    # Claims stop at the budget; what is in the prepare queue (2 claims of 1-chunk documents) may add to it.
    assert 1 <= stats["max_inflight_chunks"] <= 6 + 2 * 2
    assert max(r.inputs for r in srv.snapshot()) <= 4


def test_a_worker_claims_only_what_fills_its_chunk_budget(tmp_path: Path) -> None:
    # One request in flight and one ready (4 texts each) is a budget of 16 chunks; a claim of
    # claim_batch_size (8) documents on top of 15 held would hoard what another worker could embed.
    with FakeEmbeddingServer(latency=0.05) as srv:
        cfg = _config(tmp_path, srv, _corpus(tmp_path / "docs", 60), batch_size=4, max_concurrency=1,
                      workers={"claim_batch_size": 8, "prepare_threads": 1})
        backend = open_backend(cfg.storage.database_url(), cfg)
        backend.init_schema()
        backend.open_run(cfg.run_id(), "{}")
        backend.close()
        report = Worker(cfg, cfg.storage.database_url()).run()
    assert report.stats["done"] == 60
    assert 4 < report.stats["max_inflight_chunks"] <= 2 * (1 + 1) * 4  # more than one batch, never past the budget


def test_a_worker_claims_no_more_than_one_batch_while_its_model_loads(tmp_path: Path, server: FakeEmbeddingServer,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A killed worker costs every document it holds an attempt: while its model loads (seconds, for
    # a local model) it must not hoard the queue, whatever the chunk budget says.
    docs = _corpus(tmp_path / "docs", 40)
    cfg = _config(tmp_path, server, docs, workers={"claim_batch_size": 4, "prepare_threads": 1,
                                                   "max_inflight_chunks": 1000})
    url = cfg.storage.database_url()
    backend = open_backend(url, cfg)
    backend.init_schema()
    backend.open_run(cfg.run_id(), "{}")
    backend.close()
    held_at_load: list[int] = []

    def slow_model(embedding: Any, threads: int | None = None) -> Any:
        time.sleep(1.5)
        probe = open_backend(url, cfg)
        held_at_load.append(probe.counts(cfg.run_id())["claimed"])
        probe.close()
        return create_embedder(embedding, threads=threads)

    monkeypatch.setattr("docmill.worker.create_embedder", slow_model)
    report = Worker(cfg, url).run()
    assert report.stats["done"] == 40
    assert held_at_load == [4]


def test_retry_after_is_honoured_and_429_is_never_a_dead_letter(tmp_path: Path) -> None:
    with FakeEmbeddingServer(fail_first=2, retry_after=2) as srv:
        docs = _corpus(tmp_path / "docs", 6)
        cfg = _config(tmp_path, srv, docs, batch_size=8, requests_per_minute=600,
                      workers={"max_retries": 1})
        summary = ingest(cfg, [])
        received = srv.snapshot()
    assert summary.counts["done"] == 6 and summary.dead == 0 and summary.retried == 0
    assert [r.status for r in received] == [429, 429, 200]
    # Each retry came no sooner than the Retry-After the server gave (2 s).
    assert received[1].at - received[0].at >= 1.9 and received[2].at - received[1].at >= 1.9


# -- the shared limiter ------------------------------------------------------------------------------
def test_rate_limiter_shares_one_budget_between_connections(backend_url: str, backend: Backend) -> None:
    backend.init_schema()
    grants: list[float] = []
    lock = threading.Lock()
    start = time.monotonic()

    def hammer() -> None:
        own = open_backend(backend_url)
        limiter = RateLimiter(own, "http://x/v1|m", 600, None, burst_seconds=1.0)  # 10/s, burst of 10
        try:
            while time.monotonic() - start < 1.5:
                if limiter.acquire(tokens=5).granted:
                    with lock:
                        grants.append(time.monotonic())
        finally:
            own.close()

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    span = grants[-1] - grants[0]
    # One burst, then the rate, shared by all three; the span from the first grant to the last is the
    # tightest window (a limiter that tested a grant later than it paid for it went over here).
    assert 10 <= len(grants) <= 10 + 10 * span + 1


def test_throttling_halves_once_blocks_everyone_and_recovers(backend: Backend) -> None:
    backend.init_schema()
    a = RateLimiter(backend, "k", 6000, 60_000, burst_seconds=1.0)
    assert a.acquire(10).granted
    a.throttled_by_server(retry_after=30)
    a.throttled_by_server(retry_after=30)  # a second 429 of the same episode does not halve again
    permit = RateLimiter(backend, "k", 6000, 60_000, burst_seconds=1.0).acquire(1)
    assert not permit.granted and 29 <= permit.wait <= 31 and permit.factor == 0.5
    for _ in range(30):
        a.succeeded()
    assert RateLimiter(backend, "k", 6000, 60_000, 1.0).acquire(1).factor == 1.0


# -- presets ------------------------------------------------------------------------------------------
def test_presets_fill_only_the_keys_not_given() -> None:
    cfg = Config(workers={"preset": "high_throughput", "claim_batch_size": 3},
                 embedding={"provider": "openai", "max_concurrency": 2})
    assert cfg.workers.claim_batch_size == 3 and cfg.embedding.max_concurrency == 2  # explicit keys win
    assert cfg.workers.max_inflight_chunks == 2048 and cfg.embedding.batch_size == 128
    local = Config(workers={"preset": "standard"})
    # the CPU model keeps its measured best batch: the presets' batch sizes are for HTTP requests
    assert local.embedding.batch_size == EmbeddingConfig.model_fields["batch_size"].default
    assert Config(**local.model_dump(mode="json")).workers.prepare_threads == local.workers.prepare_threads
