-- 003: cluster-wide rate limits (docmill.ratelimit).

-- Cluster-wide rate limits: one token bucket per (endpoint, model), see ratelimit.sql. Times are
-- epoch seconds of the database clock; `factor` is the adaptive share of the configured ceiling
-- (AIMD, 0 < factor <= 1).
CREATE TABLE IF NOT EXISTS rate_limits (
    limit_key       text PRIMARY KEY,
    request_tokens  double precision NOT NULL,
    token_tokens    double precision NOT NULL,
    factor          double precision NOT NULL DEFAULT 1.0,
    blocked_until   double precision NOT NULL DEFAULT 0.0,
    updated_at      double precision NOT NULL,
    granted         boolean NOT NULL DEFAULT false,
    throttled       bigint NOT NULL DEFAULT 0
);
