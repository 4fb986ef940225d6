-- Cluster-wide rate limits (docmill.ratelimit): one token-bucket row per (endpoint, model), shared
-- by every worker process. Each operation is ONE statement, so concurrent workers serialise on the
-- row and never both spend the same budget. Times are the store's clock: :now is time.time() of
-- this machine, the only clock all SQLite workers (one machine) share, read once per statement
-- inside the write lock (a now() per mention would differ within one statement, and a grant tested
-- a microsecond later than its deduction was given without being paid for).

-- rate_acquire --
-- Refill both buckets for the time since the last call (at the ceiling rate times the adaptive
-- factor), then take :need_requests and :need_tokens if both are there and the shared block has
-- passed; `granted` says whether this call took them. The first call creates the row full.
-- updated_at never moves back: a statement that waited for the row lock may carry an older
-- timestamp than the one before it, and moving back would refill the same interval twice.
INSERT INTO rate_limits AS r (limit_key, request_tokens, token_tokens, factor, blocked_until, updated_at, granted)
VALUES (:key, :request_capacity - :need_requests, :token_capacity - :need_tokens, 1.0, 0.0, :now, 1)
ON CONFLICT (limit_key) DO UPDATE SET
    request_tokens = min(:request_capacity, r.request_tokens + max(0.0, :now - r.updated_at) * :request_rate * r.factor)
        - CASE WHEN :now >= r.blocked_until
                AND min(:request_capacity, r.request_tokens + max(0.0, :now - r.updated_at) * :request_rate * r.factor) >= :need_requests
                AND min(:token_capacity, r.token_tokens + max(0.0, :now - r.updated_at) * :token_rate * r.factor) >= :need_tokens
               THEN :need_requests ELSE 0 END,
    token_tokens = min(:token_capacity, r.token_tokens + max(0.0, :now - r.updated_at) * :token_rate * r.factor)
        - CASE WHEN :now >= r.blocked_until
                AND min(:request_capacity, r.request_tokens + max(0.0, :now - r.updated_at) * :request_rate * r.factor) >= :need_requests
                AND min(:token_capacity, r.token_tokens + max(0.0, :now - r.updated_at) * :token_rate * r.factor) >= :need_tokens
               THEN :need_tokens ELSE 0 END,
    granted = CASE WHEN :now >= r.blocked_until
                AND min(:request_capacity, r.request_tokens + max(0.0, :now - r.updated_at) * :request_rate * r.factor) >= :need_requests
                AND min(:token_capacity, r.token_tokens + max(0.0, :now - r.updated_at) * :token_rate * r.factor) >= :need_tokens
               THEN 1 ELSE 0 END,
    updated_at = max(r.updated_at, :now)
RETURNING granted, request_tokens, token_tokens, factor, blocked_until, updated_at

-- rate_throttled --
-- A 429/503: halve the factor (once per blocking episode, so a burst of 429s seen by many workers
-- halves it once, not N times), block every worker until Retry-After, and empty the buckets so
-- the restart after the block is gentle.
UPDATE rate_limits SET
    factor = CASE WHEN :now >= blocked_until THEN max(:min_factor, factor * :decrease) ELSE factor END,
    blocked_until = max(blocked_until, :now + :retry_after),
    request_tokens = 0.0, token_tokens = 0.0, throttled = throttled + 1, updated_at = max(updated_at, :now)
WHERE limit_key = :key
RETURNING factor, blocked_until

-- rate_succeeded --
-- A successful request raises the factor additively, back up to the ceiling (1.0).
UPDATE rate_limits SET factor = min(1.0, factor + :increase)
WHERE limit_key = :key AND factor < 1.0

