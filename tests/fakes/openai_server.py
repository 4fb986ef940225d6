"""A faithful fake embedding server: the OpenAI ``/embeddings`` API and Ollama's ``/api/embed``.

A real HTTP server on 127.0.0.1 (threaded, HTTP/1.1 keep-alive) that returns deterministic unit
vectors (a hash of the text seeds them, so the same text always gets the same vector), enforces its
own requests/min and tokens/min limits with token buckets and answers ``429`` + ``Retry-After`` when
they are exceeded, can add latency and inject failures, and records everything it received.

    with FakeEmbeddingServer(requests_per_minute=120) as server:
        config.embedding.base_url = server.base_url      # http://127.0.0.1:PORT/v1
        ...
        assert server.max_in_window(60) <= 120 + server.request_burst

Run it alone for manual tests or benchmarks: ``python -m tests.fakes.openai_server --port 8089``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import threading
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

#: The server counts a token as four characters, as docmill does for providers without a tokenizer.
CHARS_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    """Tokens the fake server charges for one input."""
    return len(text) // CHARS_PER_TOKEN + 1


def fake_vector(text: str, dimension: int) -> list[float]:
    """The deterministic unit vector of ``text``: the same text always gives the same vector."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(dimension)
    return (vec / np.linalg.norm(vec)).astype(np.float32).tolist()


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the server saw it."""

    at: float  # time.time() on arrival
    path: str
    inputs: int
    tokens: int
    status: int
    texts: tuple[str, ...]


class _Bucket:
    """A token bucket: ``rate`` per second, holding at most ``capacity``."""

    def __init__(self, per_minute: float, burst_seconds: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute * burst_seconds / 60.0)
        self.level = self.capacity
        self.at = time.monotonic()

    def take(self, amount: float) -> float:
        """Take ``amount``; 0 when granted, else the seconds until it would be."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        amount = min(amount, self.capacity)
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.rate


class FakeEmbeddingServer:
    """The server; use as a context manager or call ``start()``/``stop()``.

    ``requests_per_minute`` / ``tokens_per_minute``: limits (None = unlimited), each a bucket
    holding ``burst_seconds`` of its rate. ``latency``: seconds every request takes. ``failure_rate``:
    share of requests answered ``503`` + ``Retry-After: 1``. ``fail_first``: the first N requests get
    ``429`` + ``Retry-After: retry_after``. ``api_key``: when set, requests must carry it (Bearer or
    ``api-key`` header) or get ``401``. ``max_inputs``: larger requests get ``400``.
    """

    def __init__(self, *, requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 burst_seconds: float = 5.0, latency: float = 0.0, failure_rate: float = 0.0, fail_first: int = 0,
                 retry_after: float = 1.0, api_key: str | None = None, max_inputs: int = 2048,
                 port: int = 0, seed: int = 0) -> None:
        self.latency = latency
        self.failure_rate = failure_rate
        self.fail_first = fail_first
        self.retry_after = retry_after
        self.api_key = api_key
        self.max_inputs = max_inputs
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._requests = _Bucket(requests_per_minute, burst_seconds) if requests_per_minute else None
        self._tokens = _Bucket(tokens_per_minute, burst_seconds) if tokens_per_minute else None
        self.received: list[Received] = []
        self._in_flight = 0
        self.max_in_flight = 0
        self._http = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="fake-embeddings", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._http.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``…/v1``); Ollama clients use ``ollama_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ollama_url(self) -> str:
        """The Ollama-style base URL (``…/api``)."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def request_burst(self) -> int:
        """Requests the server's own bucket lets through at once (0 without a request limit)."""
        return int(self._requests.capacity) if self._requests else 0

    def start(self) -> FakeEmbeddingServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> FakeEmbeddingServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- what was received ---------------------------------------------------------------------
    def snapshot(self) -> list[Received]:
        """A copy of every request received so far."""
        with self._lock:
            return list(self.received)

    def count(self, status: int | None = None) -> int:
        """Requests received, optionally only those answered with ``status``."""
        return sum(1 for r in self.snapshot() if status is None or r.status == status)

    def inputs(self, status: int | None = 200) -> list[str]:
        """Every input text of the requests answered with ``status`` (200: the texts embedded)."""
        return [t for r in self.snapshot() if status is None or r.status == status for t in r.texts]

    def max_in_window(self, seconds: float, status: int | None = None) -> int:
        """The most requests received in any window of ``seconds`` (sliding over the arrivals)."""
        times = sorted(r.at for r in self.snapshot() if status is None or r.status == status)
        return max((bisect_right(times, t + seconds) - bisect_left(times, t) for t in times), default=0)

    def per_minute(self) -> dict[int, int]:
        """Requests per wall-clock minute (the minute's start as epoch seconds → count)."""
        counts: dict[int, int] = {}
        for r in self.snapshot():
            minute = int(r.at // 60 * 60)
            counts[minute] = counts.get(minute, 0) + 1
        return counts

    def stats(self) -> dict[str, Any]:
        """Counters as a JSON-able dict (for benchmarks)."""
        snap = self.snapshot()
        ok = [r for r in snap if r.status == 200]
        return {"requests": len(snap), "ok": len(ok), "rate_limited": sum(r.status == 429 for r in snap),
                "failed": sum(r.status >= 500 for r in snap), "inputs": sum(r.inputs for r in ok),
                "tokens": sum(r.tokens for r in ok), "max_in_flight": self.max_in_flight,
                "max_inputs_per_request": max((r.inputs for r in ok), default=0),
                "per_minute": self.per_minute()}

    # -- request handling ----------------------------------------------------------------------
    def _decide(self, n_inputs: int, tokens: int) -> tuple[int, float | None]:
        """Status and Retry-After for a request (under the lock: the buckets are shared)."""
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return 429, self.retry_after
            if self.failure_rate and self._random.random() < self.failure_rate:
                return 503, 1.0
            if self._requests and (wait := self._requests.take(1)) > 0:
                return 429, wait
            if self._tokens and (wait := self._tokens.take(tokens)) > 0:
                return 429, wait
        return 200, None

    def _record(self, path: str, texts: list[str], tokens: int, status: int, at: float) -> None:
        with self._lock:
            self.received.append(Received(at, path, len(texts), tokens, status, tuple(texts)))

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _handler_for(server: FakeEmbeddingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real providers do

        def log_message(self, *_args: Any) -> None:
            """Silent: the server's counters are its log."""

        def _send(self, status: int, body: dict[str, Any], retry_after: float | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                self.send_header("Retry-After", str(max(1, math.ceil(retry_after))))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            at = time.time()
            path = self.path.split("?", 1)[0]
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ollama = path.endswith("/api/embed")
            if not (ollama or path.endswith("/embeddings")):
                self._send(404, {"error": {"message": f"no route {path}"}})
                return
            if server.api_key is not None:
                given = self.headers.get("api-key") or self.headers.get("Authorization", "").removeprefix("Bearer ")
                if given != server.api_key:
                    self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request"}})
                    return
            try:
                body = json.loads(raw)
                texts = body["input"]
                texts = [texts] if isinstance(texts, str) else list(texts)
                dimension = int(body.get("dimensions") or 384)
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": {"message": f"invalid request body: {exc}"}})
                return
            if len(texts) > server.max_inputs or not all(isinstance(t, str) and t for t in texts):
                server._record(path, texts if all(isinstance(t, str) for t in texts) else [], 0, 400, at)
                self._send(400, {"error": {"message": f"'input' must hold 1 to {server.max_inputs} non-empty "
                                                      "strings", "type": "invalid_request_error"}})
                return
            tokens = sum(count_tokens(t) for t in texts)
            status, retry_after = server._decide(len(texts), tokens)
            server._record(path, texts, tokens, status, at)
            if status != 200:
                message = "Rate limit reached" if status == 429 else "The server is overloaded"
                self._send(status, {"error": {"message": message, "type": "rate_limit"}}, retry_after)
                return
            server._enter()
            try:
                if server.latency:
                    time.sleep(server.latency)
                vectors = [fake_vector(t, dimension) for t in texts]
            finally:
                server._leave()
            if ollama:
                self._send(200, {"model": body.get("model"), "embeddings": vectors})
            else:
                self._send(200, {"object": "list", "model": body.get("model"),
                                 "data": [{"object": "embedding", "index": i, "embedding": v}
                                          for i, v in enumerate(vectors)],
                                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return Handler


def main() -> None:
    """Serve until interrupted (for manual runs and benchmarks in other processes)."""
    parser = argparse.ArgumentParser(description="Fake OpenAI/Ollama embedding server")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--rpm", type=float)
    parser.add_argument("--tpm", type=float)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    args = parser.parse_args()
    server = FakeEmbeddingServer(requests_per_minute=args.rpm, tokens_per_minute=args.tpm, latency=args.latency,
                                 failure_rate=args.failure_rate, port=args.port).start()
    print(json.dumps({"base_url": server.base_url, "ollama_url": server.ollama_url}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
