"""The OpenAI-compatible HTTP embedder: OpenAI, Azure OpenAI, Hugging Face TEI, vLLM, LM Studio, Ollama.

``POST {base_url}/embeddings`` with ``{"model", "input": [...], "dimensions"?}`` (Ollama:
``POST {base_url}/embed`` under ``/api``). The standard library's ``http.client`` is enough: one
keep-alive connection per calling thread (the pipeline calls from at most ``max_concurrency``
threads), JSON in and out, no extra dependency. Errors are sorted for the queue: 429 and 503 are
``RateLimitedError`` (transient, with the server's ``Retry-After``), timeouts, resets and other 5xx
are ``TransientError``, any other 4xx is ``PermanentError`` carrying the server's own message. The
API key never appears in an error or a log line.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from docmill.config import EmbeddingConfig
from docmill.embedders.base import l2_normalize
from docmill.errors import ConfigError, PermanentError, RateLimitedError, TransientError

_MAX_ERROR_CHARS = 300


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIHTTPEmbedder:
    """Embeds through an OpenAI-compatible (or Ollama) HTTP endpoint."""

    def __init__(self, cfg: EmbeddingConfig, threads: int | None = None) -> None:
        del threads  # the work happens on the server
        parts = urlsplit(cfg.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"embedding.base_url {cfg.base_url!r}: use http(s)://host[:port]/path")
        self.api = cfg.api if cfg.api != "auto" else _guess_api(parts.hostname, parts.path, parts.port)
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        path = parts.path.rstrip("/")
        self._path = f"{path}/embed" if self.api == "ollama" else f"{path}/embeddings"
        if parts.query:
            self._path += "?" + parts.query  # Azure's ?api-version=…
        self._api_key = cfg.api_key
        self.model = cfg.model
        self.model_id = f"openai/{cfg.model}" + (f"@{cfg.dimensions}" if cfg.dimensions else "")
        self._dimensions = cfg.dimensions
        self.dimension = cfg.dimensions or 0  # known after the first response when not configured
        self.max_tokens = cfg.max_sequence_length
        self.batch_size = cfg.batch_size
        self.max_concurrency = cfg.max_concurrency
        self.timeout = cfg.timeout
        self.limit_key = f"{cfg.base_url.rstrip('/')}|{cfg.model}"
        self._local = threading.local()

    # -- the Embedder Protocol -----------------------------------------------------------------
    def tokenizer(self) -> None:
        """No tokenizer: the chunker counts about four characters per token."""
        return None

    def embed_query(self, text: str) -> np.ndarray:
        """Vector of one search query."""
        return self.embed([text])[0]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` in input order, ``batch_size`` texts per request."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        parts = [self._request(list(texts[i:i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        return np.vstack(parts)

    # -- HTTP ------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", "Connection": "keep-alive"}
        if self._api_key:
            if self.api == "azure":
                headers["api-key"] = self._api_key
            else:
                headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _request(self, texts: list[str]) -> np.ndarray:
        body: dict[str, Any] = {"model": self.model, "input": texts}
        if self.api != "ollama":
            body["encoding_format"] = "float"
            if self._dimensions:
                body["dimensions"] = self._dimensions
        payload = json.dumps(body).encode()
        status, headers, data = self._send(payload)
        if status == 200:
            return self._vectors(data, len(texts))
        message = self._scrub(_server_message(data) or http.client.responses.get(status, "error"))
        where = f"{self.api} embeddings at {self._host}"
        if status in (429, 503):
            retry_after = parse_retry_after(headers.get("retry-after"))
            raise RateLimitedError(f"{where}: HTTP {status}: {message}", retry_after=retry_after)
        if status >= 500 or status == 408:
            raise TransientError(f"{where}: HTTP {status}: {message}")
        raise PermanentError(f"{where}: HTTP {status}: {message}")

    def _send(self, payload: bytes) -> tuple[int, dict[str, str], bytes]:
        """POST once, reopening a kept-alive connection the server had closed (nothing was sent then)."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=payload, headers=self._headers())
                resp = conn.getresponse()
                data = resp.read()
                headers = {k.lower(): v for k, v in resp.getheaders()}
                if headers.get("connection", "").lower() == "close":
                    self._drop_connection()
                return resp.status, headers, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop_connection()
                if attempt == 2:
                    raise TransientError(f"{self.api} embeddings at {self._host}: connection lost: "
                                         f"{type(exc).__name__}") from None
            except TimeoutError:
                self._drop_connection()
                raise TransientError(f"{self.api} embeddings at {self._host}: no answer within "
                                     f"{self.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise TransientError(f"{self.api} embeddings at {self._host}: "
                                     f"{self._scrub(str(exc)) or type(exc).__name__}") from None
        raise AssertionError("unreachable")

    def _vectors(self, data: bytes, expected: int) -> np.ndarray:
        try:
            doc = json.loads(data)
            if self.api == "ollama":
                rows = doc["embeddings"]
            else:
                items = sorted(doc["data"], key=lambda item: item.get("index", 0))
                rows = [item["embedding"] for item in items]
            matrix = np.asarray(rows, dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"{self.api} embeddings at {self._host}: unreadable response: {exc}") from None
        if matrix.ndim != 2 or matrix.shape[0] != expected:
            raise TransientError(f"{self.api} embeddings at {self._host}: asked for {expected} vectors, "
                                 f"got {matrix.shape[0] if matrix.ndim else 0}")
        if self.dimension and matrix.shape[1] != self.dimension:
            raise PermanentError(f"{self.api} embeddings at {self._host}: the model returned "
                                 f"{matrix.shape[1]}-dimensional vectors, expected {self.dimension}")
        self.dimension = int(matrix.shape[1])
        return l2_normalize(matrix)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _guess_api(host: str, path: str, port: int | None) -> str:
    if host.endswith(".openai.azure.com"):
        return "azure"
    if path.rstrip("/").endswith("/api") or port == 11434:
        return "ollama"
    return "openai"


def _server_message(data: bytes) -> str:
    """The provider's own error message (OpenAI: error.message; TEI/Ollama: error), shortened."""
    try:
        doc = json.loads(data)
    except ValueError:
        return data.decode(errors="replace").strip()[:_MAX_ERROR_CHARS]
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error or doc)[:_MAX_ERROR_CHARS]
