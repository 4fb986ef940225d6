"""Cluster-wide, adaptive rate limiting of a remote embedding API, held in the store.

Every worker on every machine shares one token-bucket row per (base_url, model): requests/min and
tokens/min refill at the configured ceiling times an adaptive ``factor``, and a request is sent
only after ``acquire`` took its share in one atomic statement (so N workers together never exceed
the limit, apart from one burst of ``rate_limit_burst`` seconds' worth). AIMD, as TCP does it:

* a 429 or 503 from the provider halves ``factor`` for everyone and sets a shared ``blocked_until``
  that honours ``Retry-After``, so no worker sends until the provider said it may;
* each success raises ``factor`` by ``INCREASE`` (about 20 successes from half back to full).

Waiting uses the store's clock (the database's on PostgreSQL), never a worker's, so machines with
skewed clocks still agree. The limiter never sleeps itself: ``acquire`` says how long to wait, and
the pipeline goes on with other work (reading, parsing, storing) in the meantime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from docmill.backends.base import Backend
from docmill.config import EmbeddingConfig

#: Multiplier of the factor on a 429/503 (multiplicative decrease).
DECREASE = 0.5
#: Added to the factor per successful request (additive increase), up to 1.0.
INCREASE = 0.025
#: The factor never falls below this, so a limiter always recovers.
MIN_FACTOR = 1 / 64
#: Blocked this long after a 429/503 without a Retry-After header.
DEFAULT_RETRY_AFTER = 1.0
#: Shortest wait returned, so a caller never spins on the store.
MIN_WAIT = 0.02
UNLIMITED = 1e12


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer of ``acquire``: granted now, or wait ``wait`` seconds and ask again."""

    granted: bool
    wait: float
    factor: float


class RateLimiter:
    """The shared limiter of one endpoint and model; all state lives in the store."""

    def __init__(self, backend: Backend, key: str, requests_per_minute: int | None,
                 tokens_per_minute: int | None, burst_seconds: float) -> None:
        self.backend = backend
        self.key = key
        self.request_rate = (requests_per_minute or UNLIMITED) / 60.0
        self.token_rate = (tokens_per_minute or UNLIMITED) / 60.0
        # The bucket holds `burst_seconds` of budget, and at least one request / one full batch.
        self.request_capacity = max(1.0, self.request_rate * burst_seconds)
        self.token_capacity = max(1.0, self.token_rate * burst_seconds)
        self.throttled = 0
        self.waits = 0

    @classmethod
    def for_config(cls, backend: Backend, cfg: EmbeddingConfig, key: str) -> RateLimiter | None:
        """The limiter the config asks for, or None when neither limit is set."""
        if not cfg.requests_per_minute and not cfg.tokens_per_minute:
            return None
        return cls(backend, key, cfg.requests_per_minute, cfg.tokens_per_minute, cfg.rate_limit_burst)

    def acquire(self, tokens: int) -> Permit:
        """Take one request and ``tokens`` tokens from the shared budget, or say how long to wait."""
        need_tokens = min(float(tokens), self.token_capacity)  # a batch bigger than a burst still goes
        row = self.backend.rate_acquire(self.key, 1.0, need_tokens, self.request_rate, self.request_capacity,
                                        self.token_rate, self.token_capacity)
        if row.granted:
            return Permit(True, 0.0, row.factor)
        self.waits += 1
        waits = [row.blocked_until - row.now]
        if row.request_tokens < 1.0:
            waits.append((1.0 - row.request_tokens) / (self.request_rate * row.factor))
        if row.token_tokens < need_tokens:
            waits.append((need_tokens - row.token_tokens) / (self.token_rate * row.factor))
        wait = max(waits)
        return Permit(False, max(MIN_WAIT, wait if math.isfinite(wait) else DEFAULT_RETRY_AFTER), row.factor)

    def throttled_by_server(self, retry_after: float | None) -> None:
        """The provider answered 429/503: slow every worker down and block them for Retry-After."""
        self.throttled += 1
        self.backend.rate_throttled(self.key, retry_after if retry_after is not None else DEFAULT_RETRY_AFTER,
                                    DECREASE, MIN_FACTOR)

    def succeeded(self) -> None:
        """A request went through: creep back towards the configured ceiling."""
        self.backend.rate_succeeded(self.key, INCREASE)
