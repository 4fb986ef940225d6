"""The staged pipeline inside one worker: fetch/parse/chunk ∥ embed ∥ store, with backpressure.

Claimed documents go to a pool of ``workers.prepare_threads`` threads that read, hash, parse and
chunk them (the model and PDFium release the GIL, so threads are enough: measured, see the README).
Their chunks join one queue of texts to embed; the coordinator (the worker's own thread) cuts that
queue into embedding batches that **span documents** and claim batches alike: a batch goes out
when it holds ``batch_size`` texts (×8 and at least 32 for the local model, which sorts them by
length inside the call and spreads them over its lanes), or when its oldest text has waited
``embedding.max_batch_wait`` ms, or at once when no more text is coming or (local model) when the
model has nothing to do, which waiting would only prolong. A huge document streams
through as many batches as it needs. Up to ``max_concurrency`` batches are in flight (HTTP
providers; the packaged model runs two calls at once, so one call's last texts never leave a lane
idle, and other local models one), with one more queued so the embedder never idles.
Identical texts are embedded once: vectors come from the store's cache, or from a batch already in
flight for another document.

Backpressure: ``room()`` is 0 while the worker holds its chunk budget (at most
``workers.max_inflight_chunks``) or its prepare queue is full, so a slow embedder stops the claiming
instead of the worker buffering the corpus. A document is completed as soon as its last vector
arrives, fenced by its own lease; the documents one embedding batch finishes are stored in one
transaction. All database writes happen on the coordinator thread (one connection).
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import resource
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tokenizers

from docmill.backends.base import Backend, ClaimedDocument, DocumentResult
from docmill.backends.common import backoff_delay
from docmill.chunking import Chunker
from docmill.config import Config
from docmill.embedders.base import Embedder
from docmill.errors import (
    DocmillError,
    DocumentVanishedError,
    PermanentError,
    RateLimitedError,
    StoreUnavailableError,
    TransientError,
    error_class,
)
from docmill.models import Chunk, ParsedDocument
from docmill.parsers import parse
from docmill.ratelimit import RateLimiter
from docmill.sources.base import Source

log = logging.getLogger(__name__)
STAGES = ("read", "parse", "chunk", "embed", "store")
#: The local model gets batch_size x this many texts per call: it sorts them by length inside (1.5x faster) ...
LOCAL_GROUP = 8
#: ... and at least this many texts, so that its lanes end each call within one short text of each other.
LOCAL_CALL_TEXTS = 32
#: An embedding batch that failed transiently (not a 429) is tried this often before its documents fail.
BATCH_TRIES = 3
#: Tokens are counted as this many characters against tokens_per_minute (HTTP providers have no tokenizer).
CHARS_PER_TOKEN = 4
#: Documents without text named one by one in the summary; the rest are counted.
NAMED_NO_TEXT = 10
#: Longest time ``pump`` blocks without an event, so a stop is noticed promptly.
PUMP_SLICE = 0.5


@dataclass
class PipelineStats:
    """What one worker did; summed over workers for the ingest summary."""

    processed: int = 0
    done: int = 0
    unchanged: int = 0
    retried: int = 0
    dead: int = 0
    fenced: int = 0
    released: int = 0
    vanished: int = 0  # deleted from their source after discovery: removed, not failed
    no_text: int = 0  # done, but nothing in them to index (blank, image-only, scanned)
    #: "uri: why" of the first NAMED_NO_TEXT of those, for the summary.
    no_text_named: list[str] = field(default_factory=list)
    chunks_written: int = 0
    embedded_chunks: int = 0
    cache_hits: int = 0
    embed_requests: int = 0
    rate_limited: int = 0
    rate_waits: int = 0
    max_inflight_chunks: int = 0
    peak_rss_mb: float = 0.0
    consecutive_failures: int = 0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    #: Per-document seconds of each stage (embed: per batch), and claim-to-completion per document.
    stage_samples: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    doc_seconds: list[float] = field(default_factory=list)

    def merge(self, other: dict[str, Any]) -> None:
        """Add another worker's stats (as sent through a process queue)."""
        for key, value in other.items():
            if key == "stage_seconds":
                for stage, seconds in value.items():
                    self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
            elif key == "stage_samples":
                for stage, samples in value.items():
                    self.stage_samples.setdefault(stage, []).extend(samples)
            elif key == "doc_seconds":
                self.doc_seconds.extend(value)
            elif key == "no_text_named":
                self.no_text_named.extend(value[:NAMED_NO_TEXT - len(self.no_text_named)])
            elif key in ("max_inflight_chunks", "peak_rss_mb"):
                setattr(self, key, max(getattr(self, key), value))  # a per-worker peak, not a sum
            elif isinstance(value, int) and key != "consecutive_failures":
                setattr(self, key, getattr(self, key) + value)


@dataclass
class _Prepared:
    doc: ClaimedDocument
    parsed: ParsedDocument
    chunks: list[Chunk]
    content_hash: str
    hashes: list[str]


@dataclass
class _InFlight:
    """A claimed document between its claim and its completion."""

    doc: ClaimedDocument
    claimed_at: float
    prepared: _Prepared | None = None
    missing: set[str] = field(default_factory=set)  # text hashes still without a vector


@dataclass
class _Batch:
    items: list[tuple[str, str]]  # (text hash, text)
    tries: int = 0


def text_hash(model_id: str, text: str) -> str:
    """Cache key of one chunk's embedded text."""
    return hashlib.blake2b(f"{model_id}\x00{text}".encode(), digest_size=16).hexdigest()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Pipeline:
    """The staged pipeline of one worker; never raises for a document's own failure.

    The worker calls ``submit`` with claimed documents while ``room()`` allows, and ``pump`` to
    move work along; ``finish`` (graceful stop or end) completes what is ready and releases the
    rest, ``abort`` (second signal) releases everything at once. ``on_done`` is called with each
    document once it is no longer held (completed, failed or released).
    """

    def __init__(self, config: Config, backend: Backend, make_embedder: Callable[[], Embedder],
                 sources: dict[str, Source], stop: threading.Event | None = None,
                 on_done: Callable[[ClaimedDocument], None] | None = None) -> None:
        self.config = config
        self.backend = backend
        self._make_embedder = make_embedder
        self.sources = sources
        self.stop = stop or threading.Event()
        self.on_done = on_done
        self.stats = PipelineStats()
        self._stats_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._embedder: Embedder | None = None
        self._tokenizer: tokenizers.Tokenizer | None = None
        self._chunkers = threading.local()
        self._events: queue.Queue[tuple[str, Any, Future[Any]]] = queue.Queue()
        self._prepare_pool: ThreadPoolExecutor | None = None
        self._embed_pool: ThreadPoolExecutor | None = None
        self._limiter: RateLimiter | None = None
        self._docs: dict[str, _InFlight] = {}  # lease token → document
        # Tokens whose outcome is being written now, until they are dropped (read by the heartbeat).
        self._settling: set[str] = set()
        self._settling_lock = threading.Lock()
        self._preparing: dict[Future[Any], ClaimedDocument] = {}
        self._pending: deque[tuple[str, str]] = deque()  # texts to embed, in arrival order
        self._waiters: dict[str, list[str]] = {}  # text hash → lease tokens of documents waiting on it
        self._vectors: dict[str, np.ndarray] = {}  # vectors documents in flight still need
        self._in_flight_batches = 0
        self._oldest_pending = 0.0
        self._not_before = 0.0  # no batch goes out before this (rate limit, Retry-After, backoff)
        self._retry_queue: deque[_Batch] = deque()
        self._held_chunks = 0
        self._prepared_chunks = 0  # over every document accepted: the chunks a claim is likely to bring
        self._prepared_documents = 0
        self._more_coming = False  # the worker may submit more soon: a partial batch waits to fill

    # -- lazily built parts ------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The model, loaded on first use: a re-run where nothing changed never loads it."""
        if self._embedder is None:
            with self._model_lock:
                if self._embedder is None:
                    embedder = self._make_embedder()
                    # One copy for every thread's chunker (tokenizers encode concurrently): ~20 ms each.
                    self._tokenizer = embedder.tokenizer()
                    self._embedder = embedder
        return self._embedder

    @property
    def chunker(self) -> Chunker:
        """This thread's chunker (one per thread: the splitter is not shared across threads)."""
        chunker = getattr(self._chunkers, "chunker", None)
        if chunker is None:
            embedder = self.embedder  # sets self._tokenizer
            chunker = Chunker(self.config.chunking, self._tokenizer, embedder.max_tokens)
            self._chunkers.chunker = chunker
        return chunker

    def _concurrency(self) -> int:
        """Embedding calls run at once: an HTTP embedder's ``max_concurrency``, a local one's
        ``parallel_calls`` (1 unless it declares that concurrent calls are safe and pay)."""
        declared = getattr(self.embedder, "max_concurrency", None) or getattr(self.embedder, "parallel_calls", 1)
        return max(1, int(declared))

    def _remote(self) -> bool:
        """True for an HTTP embedder (it declares its own concurrency); False for a model in this process."""
        return hasattr(self.embedder, "max_concurrency")

    def _batch_texts(self) -> int:
        size = self.config.embedding.batch_size
        return size if self._remote() else max(LOCAL_CALL_TEXTS, size * LOCAL_GROUP)

    def _limiter_for(self) -> RateLimiter | None:
        if self._limiter is None and hasattr(self.embedder, "limit_key"):
            self._limiter = RateLimiter.for_config(self.backend, self.config.embedding,
                                                   self.embedder.limit_key)  # type: ignore[attr-defined]
        return self._limiter

    def _record(self, stage: str, seconds: float) -> None:
        with self._stats_lock:
            self.stats.stage_seconds[stage] += seconds
            self.stats.stage_samples[stage].append(round(seconds, 6))

    def _timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self._record(stage, time.perf_counter() - start)

    # -- what the worker calls ---------------------------------------------------------------
    def held_tokens(self) -> list[str]:
        """Lease tokens of every document in flight (for the heartbeat)."""
        return list(self._docs)

    def busy(self) -> bool:
        """True while any claimed document is not yet completed, failed or released."""
        return bool(self._docs)

    def room(self) -> int:
        """Documents worth claiming now: as many as would fill the chunk budget at the chunks per
        document seen so far, counting those still being prepared, and at most
        ``workers.claim_batch_size``; 0 when full or stopping.
        Claiming more only hoards: at the end of a run, the workers that hoarded finish last while
        the others idle (measured: 8 HTTP workers on 300 documents lost 4 s of a 15 s run)."""
        if self.stop.is_set():
            return 0
        workers = self.config.workers
        prepare_room = max(workers.claim_batch_size, 2 * workers.prepare_threads) - len(self._preparing)
        per_document = max(1.0, self._prepared_chunks / self._prepared_documents) if self._prepared_documents else 1.0
        free = self._chunk_budget() - self._held_chunks - len(self._preparing) * per_document
        return max(0, min(workers.claim_batch_size, prepare_room, math.ceil(free / per_document)))

    def _chunk_budget(self) -> int:
        """Chunks worth holding: ``max_inflight_chunks``, but no more than two rounds of full batches
        for every embedding slot. Holding more only hoards documents that idle workers (on this or
        another machine) could be embedding: measured, a 512-chunk prefetch let 2 of 4 workers claim
        a 300-document corpus and scaling stopped at 2 workers."""
        if self._embedder is None:
            # Not reached with work held: the first pump loads the model on the coordinator's
            # thread, so a fresh worker makes one claim and then waits for its model.
            return self.config.workers.max_inflight_chunks
        slots = self._concurrency() + 1
        return min(self.config.workers.max_inflight_chunks, 2 * slots * self._batch_texts())

    def submit(self, docs: Sequence[ClaimedDocument]) -> None:
        """Start preparing claimed documents (read, hash, parse, chunk on the prepare threads)."""
        if self._prepare_pool is None:
            self._prepare_pool = ThreadPoolExecutor(self.config.workers.prepare_threads,
                                                    thread_name_prefix="docmill-prepare")
        now = time.monotonic()
        self._more_coming = True
        for doc in docs:
            self._docs[doc.lease_token] = _InFlight(doc, now)
            future = self._prepare_pool.submit(self._prepare, doc)
            self._preparing[future] = doc
            future.add_done_callback(lambda f: self._events.put(("prepared", None, f)))

    def input_paused(self) -> None:
        """The worker found nothing more to claim for now: send partial batches without waiting."""
        self._more_coming = False

    def process(self, docs: Sequence[ClaimedDocument]) -> None:
        """Run a claimed batch to completion (submit, then pump until nothing is in flight)."""
        self.submit(docs)
        self.input_paused()
        while self.busy():
            if self.stop.is_set():
                self.finish()
                return
            self.pump(PUMP_SLICE)

    def pump(self, timeout: float) -> None:
        """Handle finished stage work, send due embedding batches, complete ready documents.

        Blocks up to ``timeout`` seconds for something to happen (less when a partial batch or a
        rate-limit wait falls due sooner).
        """
        self._dispatch()
        wait = min(timeout, self._next_deadline() - time.monotonic())
        try:
            event = self._events.get(timeout=max(0.0, wait)) if wait > 0 else self._events.get_nowait()
        except queue.Empty:
            event = None
        while event is not None:
            self._handle(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                event = None
        self._dispatch()
        with self._stats_lock:
            self.stats.max_inflight_chunks = max(self.stats.max_inflight_chunks, self._held_chunks)

    def finish(self) -> None:
        """Graceful end: prepare nothing new, let running stages end, complete what has its vectors,
        release the rest (it goes back to the queue without spending an attempt)."""
        for future, doc in list(self._preparing.items()):
            if future.cancel():
                del self._preparing[future]
                self._drop(doc.lease_token)
                self._release([doc])
        while self._preparing or self._in_flight_batches:
            self._handle(self._events.get())
        rest = [f.doc for f in self._docs.values()]
        for doc in rest:
            self._drop(doc.lease_token)
        self._release(rest)
        self._close_pools(wait=True)
        self.stats.peak_rss_mb = peak_rss_mb()

    def abort(self, *, release: bool = True) -> None:
        """Immediate end (second signal): give every held document back and leave at once; without
        ``release`` (the store is gone) the leases lapse instead."""
        rest = [f.doc for f in self._docs.values()]
        self._docs.clear()
        try:
            if rest and release:
                self.backend.release(rest)
        finally:
            self._close_pools(wait=False)

    def _close_pools(self, wait: bool) -> None:
        for pool in (self._prepare_pool, self._embed_pool):
            if pool is not None:
                pool.shutdown(wait=wait, cancel_futures=True)
        self._prepare_pool = self._embed_pool = None

    # -- stage 1: prepare (on the prepare threads) --------------------------------------------
    def _prepare(self, doc: ClaimedDocument) -> _Prepared | None:
        """Read, hash, parse, chunk; None when the content did not change."""
        source = self.sources.get(doc.source)
        if source is None:
            raise PermanentError(f"source {doc.source!r} is not in this configuration")
        data: bytes = self._timed("read", lambda: source.fetch(doc.key))
        content_hash = hashlib.sha256(data).hexdigest()
        if content_hash == doc.content_hash:
            return None  # touched but not changed (mtime moved): keep the stored chunks, embed nothing
        parsed: ParsedDocument = self._timed("parse", lambda: parse(data, doc.key))
        if not parsed.sections:
            return _Prepared(doc, parsed, [], content_hash, [])  # nothing to embed: no need for the model
        chunks: list[Chunk] = self._timed("chunk", lambda: self.chunker.chunk(parsed))
        hashes = [text_hash(self.embedder.model_id, c.embed_text) for c in chunks]
        return _Prepared(doc, parsed, chunks, content_hash, hashes)

    # -- events (on the coordinator) -----------------------------------------------------------
    def _handle(self, event: tuple[str, Any, Future[Any]]) -> None:
        kind, payload, future = event
        if kind == "prepared":
            doc = self._preparing.pop(future, None)
            if doc is None:
                return  # cancelled in finish()
            try:
                prepared = future.result()
            except Exception as exc:
                self._fail(doc, exc)
                self._drop(doc.lease_token)
                return
            if prepared is None:
                self._settle([doc])
                ok = self._timed("store", lambda: self.backend.complete_unchanged(doc))
                self._finish(doc, bool(ok), "unchanged")
                self._drop(doc.lease_token)
                return
            self._accept(prepared)
        else:
            self._in_flight_batches -= 1
            self._embedded(payload, future)

    def _accept(self, p: _Prepared) -> None:
        """A prepared document: find its vectors (cache, in flight) and queue the texts still missing."""
        flight = self._docs[p.doc.lease_token]
        flight.prepared = p
        self._held_chunks += len(p.chunks)
        self._prepared_chunks += len(p.chunks)
        self._prepared_documents += 1
        unique = dict.fromkeys(p.hashes)
        unknown = [h for h in unique if h not in self._vectors and h not in self._waiters]
        cached = self.backend.cached_vectors(self.embedder.model_id, unknown) if unknown else {}
        self._vectors.update(cached)
        texts = {h: c.embed_text for h, c in zip(p.hashes, p.chunks, strict=True)}
        hits = 0
        for h in unique:
            if h in self._vectors:
                hits += 1
                continue
            if h in self._waiters:
                hits += 1  # identical text already queued or in flight for another document
            else:
                self._waiters[h] = []
                if not self._pending:
                    self._oldest_pending = time.monotonic()
                self._pending.append((h, texts[h]))
            self._waiters[h].append(p.doc.lease_token)
            flight.missing.add(h)
        with self._stats_lock:
            self.stats.cache_hits += hits + (len(p.hashes) - len(unique))
        if not flight.missing:
            self._complete([flight])

    # -- stage 2: embed --------------------------------------------------------------------------
    def _next_deadline(self) -> float:
        """When ``_dispatch`` may next have something to send without any event arriving."""
        if self._in_flight_batches > self._concurrency():
            return float("inf")  # only a finished batch (an event) makes room: never spin meanwhile
        if self._retry_queue:
            return self._not_before
        if self._pending:
            return max(self._not_before, self._oldest_pending + self.config.embedding.max_batch_wait / 1000.0)
        return float("inf")

    def _dispatch(self) -> None:
        """Send every embedding batch that is due, within the concurrency and rate limits."""
        if self.stop.is_set():
            return
        while self._pending or self._retry_queue:
            if self._in_flight_batches > self._concurrency():
                return  # one batch waits queued behind the running ones, so the embedder never idles
            now = time.monotonic()
            if now < self._not_before:
                return
            if self._retry_queue:
                batch = self._retry_queue[0]
            else:
                size = self._batch_texts()
                full = len(self._pending) >= size
                overdue = now - self._oldest_pending >= self.config.embedding.max_batch_wait / 1000.0
                # Nothing more can arrive (no claims coming, nothing being prepared), or the chunk
                # budget is spent so nothing more will be claimed: waiting would only idle the embedder.
                starved = (not self._more_coming and not self._preparing) or \
                    self._held_chunks >= self.config.workers.max_inflight_chunks
                # A local model with no call running is a CPU left idle (a first batch would wait for
                # a whole call's texts, ~0.1 s at start); an HTTP batch waits, as requests count.
                idle = not self._in_flight_batches and not self._remote()
                if not (full or overdue or starved or idle):
                    return
                batch = _Batch([self._pending.popleft() for _ in range(min(size, len(self._pending)))])
                batch.items = [(h, t) for h, t in batch.items if self._waiters.get(h)]
                self._oldest_pending = now
                if not batch.items:
                    continue
                self._retry_queue.appendleft(batch)
            limiter = self._limiter_for()
            if limiter is not None:
                permit = limiter.acquire(sum(len(t) // CHARS_PER_TOKEN + 1 for _, t in batch.items))
                if not permit.granted:
                    self.stats.rate_waits += 1
                    self._not_before = time.monotonic() + permit.wait
                    return
            self._retry_queue.popleft()
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        if self._embed_pool is None:
            self._embed_pool = ThreadPoolExecutor(self._concurrency(), thread_name_prefix="docmill-embed")
        texts = [t for _, t in batch.items]
        future = self._embed_pool.submit(self._timed, "embed", lambda: self.embedder.embed(texts))
        self._in_flight_batches += 1
        self.stats.embed_requests += 1
        future.add_done_callback(lambda f: self._events.put(("embedded", batch, f)))

    def _embedded(self, batch: _Batch, future: Future[Any]) -> None:
        limiter = self._limiter_for()
        try:
            vectors = future.result()
        except Exception as exc:
            self._batch_failed(batch, exc, limiter)
            return
        if limiter is not None:
            limiter.succeeded()
        self.stats.embedded_chunks += len(batch.items)
        ready: list[_InFlight] = []
        for (h, _), vec in zip(batch.items, vectors, strict=True):
            self._vectors[h] = vec
            for token in self._waiters.pop(h, []):
                flight = self._docs.get(token)
                if flight is None:
                    continue
                flight.missing.discard(h)
                if not flight.missing:
                    ready.append(flight)
        self._complete(ready)

    def _batch_failed(self, batch: _Batch, exc: BaseException, limiter: RateLimiter | None) -> None:
        """429/503: everyone slows down and the batch waits; other transient errors: a few tries;
        a permanent error on a batch of several: each text alone, to find the one that is bad."""
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(exc, RateLimitedError):
            self.stats.rate_limited += 1
            if limiter is not None:
                limiter.throttled_by_server(retry_after)
            self._not_before = max(self._not_before, time.monotonic() + (retry_after or 1.0))
            self._retry_queue.appendleft(batch)
            log.info("embedding rate-limited (%s); retrying in %.1fs", exc, retry_after or 1.0)
            return
        if isinstance(exc, PermanentError) and len(batch.items) > 1:
            self._retry_queue.extendleft(_Batch([item]) for item in reversed(batch.items))
            return
        batch.tries += 1
        if not isinstance(exc, PermanentError) and batch.tries < BATCH_TRIES:
            self._not_before = max(self._not_before, time.monotonic() + 0.5 * 2 ** batch.tries)
            self._retry_queue.appendleft(batch)
            return
        tokens = {t for h, _ in batch.items for t in self._waiters.get(h, [])}
        for token in tokens:
            flight = self._docs.get(token)
            if flight is not None:
                self._fail(flight.doc, exc)
                self._drop(token)

    # -- stage 3: store ----------------------------------------------------------------------------
    def _complete(self, flights: Sequence[_InFlight]) -> None:
        """Store every document whose last vector arrived, in one transaction (each still fenced by
        its own lease): a batch of small documents costs one commit, not one each."""
        if not flights:
            return
        items = []
        for flight in flights:
            assert flight.prepared is not None  # only prepared documents wait for vectors
            items.append((flight.prepared.doc, self._result(flight.prepared)))
        self._settle([doc for doc, _ in items])
        try:
            oks = self._timed("store", lambda: self.backend.complete_many(items))
        except StoreUnavailableError:
            raise  # not these documents' fault: storing them one by one would only wait again for each
        except Exception as exc:
            if len(flights) > 1:  # find the document at fault: store each on its own
                for flight in flights:
                    self._complete([flight])
                return
            self._fail(items[0][0], exc)
            self._drop(items[0][0].lease_token)
            return
        now = time.monotonic()
        for flight, (doc, result), ok in zip(flights, items, oks, strict=True):
            if ok:
                self.stats.chunks_written += len(result.chunks)
                if not result.chunks:
                    self._no_text(doc, result.metadata.get("note"))
            self._finish(doc, ok, "done")
            self._drop(doc.lease_token)
            with self._stats_lock:
                self.stats.doc_seconds.append(round(now - flight.claimed_at, 6))

    def _no_text(self, doc: ClaimedDocument, note: str | None) -> None:
        """Count a document stored without chunks, with the parser's note on why where it left one."""
        self.stats.no_text += 1
        if len(self.stats.no_text_named) < NAMED_NO_TEXT:
            self.stats.no_text_named.append(f"{doc.uri}: {note}" if note else doc.uri)

    def settling(self) -> frozenset[str]:
        """Lease tokens whose outcome is being stored right now: a heartbeat that finds their leases
        gone must not call them lost (read it before the held tokens, see ``_drop``)."""
        with self._settling_lock:
            return frozenset(self._settling)

    def _settle(self, docs: Sequence[ClaimedDocument]) -> None:
        """Say that these documents' outcome is about to be written."""
        with self._settling_lock:
            self._settling.update(d.lease_token for d in docs)

    def _drop(self, token: str) -> None:
        """Forget a document: its chunk budget, its waits, and vectors nobody else needs."""
        flight = self._docs.pop(token, None)
        if flight is not None:
            if flight.prepared is not None:
                self._held_chunks -= len(flight.prepared.chunks)
                for h in dict.fromkeys(flight.prepared.hashes):
                    waiters = self._waiters.get(h)
                    if waiters and token in waiters:
                        waiters.remove(token)
                    if not any(f.prepared and h in f.prepared.hashes for f in self._docs.values()):
                        self._vectors.pop(h, None)
            if self.on_done is not None:
                self.on_done(flight.doc)
        # Only after on_done: at every instant the token is held, settling, or both.
        with self._settling_lock:
            self._settling.discard(token)

    def _result(self, p: _Prepared) -> DocumentResult:
        """What the store keeps of a prepared document whose vectors have all arrived."""
        matrix = (np.vstack([self._vectors[h] for h in p.hashes]).astype(np.float32)
                  if p.hashes else np.zeros((0, 0), dtype=np.float32))
        return DocumentResult(content_hash=p.content_hash, title=p.parsed.title, mime=p.parsed.mime,
                              chunks=p.chunks, vectors=matrix, text_hashes=p.hashes,
                              model_id=self.embedder.model_id if p.hashes else "",
                              links=p.parsed.links, metadata=p.parsed.metadata)

    def _finish(self, doc: ClaimedDocument, ok: bool, outcome: str) -> None:
        self.stats.processed += 1
        if not ok:
            self.stats.fenced += 1
            log.warning("lease lost on %s: another worker took it over; result dropped", doc.uri,
                        extra={"doc_id": doc.id})
            return
        self.stats.consecutive_failures = 0
        if outcome == "unchanged":
            self.stats.unchanged += 1
        else:
            self.stats.done += 1

    def _fail(self, doc: ClaimedDocument, exc: BaseException) -> None:
        self._settle([doc])
        if isinstance(exc, DocumentVanishedError):
            # Deleted while queued: what the next discovery would do (remove it), done now.
            if self.backend.remove_vanished(doc, self.config.worker_name()):
                self.stats.vanished += 1
                log.info("removed %s: %s", doc.uri, exc, extra={"doc_id": doc.id})
            else:
                self.stats.fenced += 1
            return
        workers = self.config.workers
        permanent = isinstance(exc, PermanentError)
        message = str(exc) or error_class(exc)
        if not isinstance(exc, DocmillError):
            # An unexpected exception may be a passing fault or a bug on hostile input: retry it, but
            # say what it was, and give up after max_retries like any transient error.
            log.debug("unexpected error on %s", doc.uri, exc_info=exc)
            message = f"{error_class(exc)}: {message}"
        retry_in: float | None = None
        if not permanent and doc.attempts < workers.max_retries:
            retry_in = backoff_delay(doc.attempts, workers.retry_delay, workers.max_retry_delay,
                                     workers.exponential_backoff)
            if isinstance(exc, TransientError) and exc.retry_after:
                retry_in = max(retry_in, exc.retry_after)
        elif not permanent:
            message = f"gave up after {doc.attempts} attempts: {message}"
        try:
            ok = self.backend.fail(doc, error_class(exc), message, retry_in)
        except StoreUnavailableError:
            raise
        except Exception as store_exc:
            log.warning("could not record the failure of %s: %s", doc.uri, store_exc)
            return
        self.stats.processed += 1
        self.stats.consecutive_failures += 0 if permanent else 1  # a bad file is not the worker's fault
        if not ok:
            self.stats.fenced += 1
        elif retry_in is None:
            self.stats.dead += 1
            log.warning("dead-lettered %s: %s", doc.uri, message, extra={"doc_id": doc.id})
        else:
            self.stats.retried += 1
            log.info("will retry %s in %.0fs: %s", doc.uri, retry_in, message, extra={"doc_id": doc.id})

    def _release(self, docs: Sequence[ClaimedDocument]) -> None:
        if docs:
            self.stats.released += self.backend.release(docs)

