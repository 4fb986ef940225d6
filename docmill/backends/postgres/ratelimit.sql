-- Cluster-wide rate limits (docmill.ratelimit): one token-bucket row per (endpoint, model), shared
-- by every worker process. Each operation is ONE statement, so concurrent workers serialise on the
-- row and never both spend the same budget. Times are epoch seconds of the database server's
-- clock (statement_timestamp()), the one clock workers on every machine share.

-- rate_acquire --
-- Refill both buckets for the time since the last call (at the ceiling rate times the adaptive
-- factor), then take %(need_requests)s and %(need_tokens)s if both are there and the shared block has
-- passed; `granted` says whether this call took them. The first call creates the row full.
-- updated_at never moves back: a statement that waited for the row lock may carry an older
-- timestamp than the one before it, and moving back would refill the same interval twice.
INSERT INTO rate_limits AS r (limit_key, request_tokens, token_tokens, factor, blocked_until, updated_at, granted)
VALUES (%(key)s, %(request_capacity)s - %(need_requests)s, %(token_capacity)s - %(need_tokens)s, 1.0, 0.0, extract(epoch FROM statement_timestamp()), true)
ON CONFLICT (limit_key) DO UPDATE SET
    request_tokens = LEAST(%(request_capacity)s, r.request_tokens + GREATEST(0.0, extract(epoch FROM statement_timestamp()) - r.updated_at) * %(request_rate)s * r.factor)
        - CASE WHEN extract(epoch FROM statement_timestamp()) >= r.blocked_until
                AND LEAST(%(request_capacity)s, r.request_tokens + GREATEST(0.0, extract(epoch FROM statement_timestamp()) - r.updated_at) * %(request_rate)s * r.factor) >= %(need_requests)s
                AND LEAST(%(token_capacity)s, r.token_tokens + GREATEST(0.0, extract(epoch FROM statement_timestamp()) - r.updated_at) * %(token_rate)s * r.factor) >= %(need_tokens)s
               THEN %(need_requests)s ELSE 0 END,
    token_tokens = LEAST(%(token_capacity)s, r.token_tokens + GREATEST(0.0, extract(epoch FROM statement_timestamp()) - r.updated_at) * %(token_rate)s * r.factor)
        - CASE WHEN extract(epoch FROM statement_timestamp()) >= r.blocked_until
                AND LEAST(%(request_capacity)s, r.request_tokens + GREATEST(0.0, extract(epoch FROM statement_timestamp()) - r.updated_at) * %(request_rate)s * r.factor) >= %(need_requests)s
                AND LEAST(%(token_capacity)s, r.token_tokens + GREATEST(0.0, extract(epoch FROM statement_timestamp()) - r.updated_at) * %(token_rate)s * r.factor) >= %(need_tokens)s
               THEN %(need_tokens)s ELSE 0 END,
    granted = CASE WHEN extract(epoch FROM statement_timestamp()) >= r.blocked_until
                AND LEAST(%(request_capacity)s, r.request_tokens + GREATEST(0.0, extract(epoch FROM statement_timestamp()) - r.updated_at) * %(request_rate)s * r.factor) >= %(need_requests)s
                AND LEAST(%(token_capacity)s, r.token_tokens + GREATEST(0.0, extract(epoch FROM statement_timestamp()) - r.updated_at) * %(token_rate)s * r.factor) >= %(need_tokens)s
               THEN true ELSE false END,
    updated_at = GREATEST(r.updated_at, extract(epoch FROM statement_timestamp()))
RETURNING granted, request_tokens, token_tokens, factor, blocked_until, updated_at

-- rate_throttled --
-- A 429/503: halve the factor (once per blocking episode, so a burst of 429s seen by many workers
-- halves it once, not N times), block every worker until Retry-After, and empty the buckets so
-- the restart after the block is gentle.
UPDATE rate_limits SET
    factor = CASE WHEN extract(epoch FROM statement_timestamp()) >= blocked_until THEN GREATEST(%(min_factor)s, factor * %(decrease)s) ELSE factor END,
    blocked_until = GREATEST(blocked_until, extract(epoch FROM statement_timestamp()) + %(retry_after)s),
    request_tokens = 0.0, token_tokens = 0.0, throttled = throttled + 1,
    updated_at = GREATEST(updated_at, extract(epoch FROM statement_timestamp()))
WHERE limit_key = %(key)s
RETURNING factor, blocked_until

-- rate_succeeded --
-- A successful request raises the factor additively, back up to the ceiling (1.0).
UPDATE rate_limits SET factor = LEAST(1.0, factor + %(increase)s)
WHERE limit_key = %(key)s AND factor < 1.0

