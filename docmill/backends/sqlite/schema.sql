-- docmill SQLite schema, version 1. Times are seconds since the epoch (REAL), from now().

CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
    run_id              TEXT PRIMARY KEY,
    config_json         TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'ingesting'
                        CHECK (state IN ('ingesting', 'finalizing', 'complete')),
    discovery_gen       INTEGER NOT NULL DEFAULT 1,
    discovered_gen      INTEGER NOT NULL DEFAULT 0,
    leader_id           TEXT,
    leader_expires_at   REAL,
    finalizer_id        TEXT,
    finalize_expires_at REAL,
    finalize_count      INTEGER NOT NULL DEFAULT 0,
    shutdown_requested  INTEGER NOT NULL DEFAULT 0,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL
);

-- The queue and the registry: one row per (run, source, key).
CREATE TABLE IF NOT EXISTS documents (
    id               INTEGER PRIMARY KEY,
    run_id           TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    source           TEXT NOT NULL,
    doc_key          TEXT NOT NULL,
    uri              TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'claimed', 'done', 'dead')),
    priority         INTEGER NOT NULL DEFAULT 0,
    depth            INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    available_at     REAL NOT NULL,
    lease_token      TEXT,
    claimed_by       TEXT,
    lease_expires_at REAL,
    size_bytes       INTEGER,
    version          TEXT,
    done_version     TEXT,
    content_hash     TEXT,
    seen_gen         INTEGER NOT NULL DEFAULT 0,
    title            TEXT,
    mime             TEXT,
    chunk_count      INTEGER NOT NULL DEFAULT 0,
    links            TEXT,
    metadata         TEXT,
    last_error       TEXT,
    error_class      TEXT,
    discovered_at    REAL NOT NULL,
    updated_at       REAL NOT NULL,
    done_at          REAL,
    UNIQUE (run_id, source, doc_key)
);
CREATE INDEX IF NOT EXISTS documents_pending ON documents (run_id, priority DESC, id)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS documents_claimed ON documents (run_id, lease_expires_at)
    WHERE state = 'claimed';
CREATE INDEX IF NOT EXISTS documents_lease ON documents (lease_token) WHERE lease_token IS NOT NULL;
CREATE INDEX IF NOT EXISTS documents_state ON documents (run_id, state);

-- One row per claim: who held the document, how it ended, and why it failed.
CREATE TABLE IF NOT EXISTS attempts (
    id            INTEGER PRIMARY KEY,
    document_id   INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    run_id        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    lease_token   TEXT NOT NULL UNIQUE,
    claimed_at    REAL NOT NULL,
    finished_at   REAL,
    outcome       TEXT CHECK (outcome IN ('done', 'unchanged', 'retry', 'dead', 'released', 'lost', 'fenced')),
    error_class   TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS attempts_document ON attempts (document_id);
CREATE INDEX IF NOT EXISTS attempts_run_outcome ON attempts (run_id, outcome, finished_at);

-- AUTOINCREMENT: ids are never reused, so "max(id)" tells readers whether chunks changed.
CREATE TABLE IF NOT EXISTS chunks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id  INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal      INTEGER NOT NULL,
    text         TEXT NOT NULL,
    heading_path TEXT NOT NULL DEFAULT '[]',
    page         INTEGER,
    char_start   INTEGER NOT NULL,
    char_end     INTEGER NOT NULL,
    token_count  INTEGER NOT NULL DEFAULT 0,
    text_hash    TEXT NOT NULL,
    embedding    BLOB NOT NULL,
    UNIQUE (document_id, ordinal)
);

-- Full-text half of hybrid search, kept in step with chunks by triggers.
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (
    text, content = 'chunks', content_rowid = 'id', tokenize = 'porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

-- Vectors by (model, chunk text): identical text is embedded once, changed documents re-embed
-- only their changed chunks.
CREATE TABLE IF NOT EXISTS embedding_cache (
    model_id   TEXT NOT NULL,
    text_hash  TEXT NOT NULL,
    embedding  BLOB NOT NULL,
    PRIMARY KEY (model_id, text_hash)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS workers (
    worker_id      TEXT PRIMARY KEY,
    run_id         TEXT NOT NULL,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    started_at     REAL NOT NULL,
    last_beat_at   REAL NOT NULL,
    stopped_at     REAL,
    current_docs   INTEGER NOT NULL DEFAULT 0,
    processed      INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0,
    pid_ns         TEXT              -- /proc/self/ns/pid: whose pids this worker can see (schema 5)
);

CREATE TABLE IF NOT EXISTS relationships (
    run_id     TEXT NOT NULL,
    source_id  INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    target_id  INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('links_to', 'similar')),
    score      REAL NOT NULL,
    PRIMARY KEY (run_id, source_id, target_id, kind)
);

-- What the last finalize computed relationships from (a fingerprint of the run's done documents),
-- so a finalize after a re-run that changed nothing keeps the edges instead of recomputing them.
CREATE TABLE IF NOT EXISTS finalized_inputs (
    run_id       TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    fingerprint  TEXT NOT NULL
);

-- Cluster-wide rate limits: one token bucket per (endpoint, model), see ratelimit.sql. Times are
-- epoch seconds; `factor` is the adaptive share of the configured ceiling (AIMD, 0 < factor <= 1).
CREATE TABLE IF NOT EXISTS rate_limits (
    limit_key       TEXT PRIMARY KEY,
    request_tokens  REAL NOT NULL,
    token_tokens    REAL NOT NULL,
    factor          REAL NOT NULL DEFAULT 1.0,
    blocked_until   REAL NOT NULL DEFAULT 0.0,
    updated_at      REAL NOT NULL,
    granted         INTEGER NOT NULL DEFAULT 0,
    throttled       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- == Operations (schema version 2) ==========================================================
-- The document history that `docmill trace` tells: one row per thing that happened to a document,
-- written by the backend in the same transaction as the change it describes. No foreign key: the
-- history of a removed document outlives it. Bounded by monitoring.event_retention_days.
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL,
    document_id INTEGER NOT NULL,
    at          REAL NOT NULL,
    kind        TEXT NOT NULL,
    worker_id   TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_document ON events (document_id, id);
CREATE INDEX IF NOT EXISTS events_run_at ON events (run_id, at);

-- What the last `docmill monitor --alerts` saw, so the next one can tell that the dead-letter
-- queue grew in between.
CREATE TABLE IF NOT EXISTS alert_state (
    run_id     TEXT PRIMARY KEY,
    dead_count INTEGER NOT NULL,
    checked_at REAL NOT NULL
);
-- == end of operations ======================================================================
