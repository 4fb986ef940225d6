-- docmill PostgreSQL queries. Times come from the database clock: now() is the start of the
-- current transaction, which keeps every row a transaction touches on one timestamp.
-- Epoch seconds (float) are what Python sees. {placeholders} are filled by the backend with
-- trusted text only (a vector dimension, a fixed filter clause), never with user input.

-- insert_run --
-- Create a run row if it does not exist yet.
INSERT INTO runs (run_id, config_json) VALUES (%(run_id)s, %(config_json)s)
ON CONFLICT (run_id) DO NOTHING

-- reopen_run --
-- A new ingest of a drained run (or, with %(rediscover)s, of an interrupted one whose last pass
-- had finished) asks for another discovery pass and clears the shutdown flag.
UPDATE runs
SET state = 'ingesting', discovery_gen = discovery_gen + 1, shutdown_requested = false,
    finalizer_id = NULL, finalize_expires_at = NULL, updated_at = now()
WHERE run_id = %(run_id)s
  AND (state <> 'ingesting' OR shutdown_requested OR (%(rediscover)s AND discovered_gen >= discovery_gen))

-- get_run --
-- One run.
SELECT run_id, state, discovery_gen, discovered_gen, leader_id,
       extract(epoch FROM leader_expires_at)::float8, shutdown_requested, finalize_count,
       extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8, config_json
FROM runs WHERE run_id = %(run_id)s

-- list_runs --
-- Every run, newest first.
SELECT run_id, state, discovery_gen, discovered_gen, leader_id,
       extract(epoch FROM leader_expires_at)::float8, shutdown_requested, finalize_count,
       extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8, config_json
FROM runs ORDER BY updated_at DESC

-- acquire_leadership --
-- Take the leader lease when free or lapsed, or renew our own.
UPDATE runs SET leader_id = %(worker_id)s, leader_expires_at = now() + make_interval(secs => %(ttl)s)
WHERE run_id = %(run_id)s
  AND (leader_id IS NULL OR leader_id = %(worker_id)s OR leader_expires_at < now())

-- release_leadership --
-- Give the leader lease up.
UPDATE runs SET leader_id = NULL, leader_expires_at = NULL
WHERE run_id = %(run_id)s AND leader_id = %(worker_id)s

-- finish_discovery --
-- Mark a discovery pass as complete.
UPDATE runs SET discovered_gen = %(generation)s, updated_at = now()
WHERE run_id = %(run_id)s AND discovered_gen < %(generation)s

-- request_shutdown --
-- Ask every worker of the run to stop.
UPDATE runs SET shutdown_requested = true, updated_at = now() WHERE run_id = %(run_id)s

-- existing_versions --
-- What the run already knows of some keys of one source.
SELECT doc_key, version, state, uri FROM documents
WHERE run_id = %(run_id)s AND source = %(source)s AND doc_key = ANY(%(keys)s::text[])

-- upsert_documents --
-- Enqueue discovered documents (one row per key); a changed version sends a finished one back to pending.
INSERT INTO documents AS d (run_id, source, doc_key, uri, priority, depth, size_bytes, version, seen_gen)
SELECT %(run_id)s, %(source)s, k, u, p, dp, s, v, %(generation)s
FROM unnest(%(keys)s::text[], %(uris)s::text[], %(priorities)s::int[], %(depths)s::int[],
            %(sizes)s::bigint[], %(versions)s::text[]) AS t (k, u, p, dp, s, v)
ON CONFLICT (run_id, source, doc_key) DO UPDATE SET
    seen_gen = excluded.seen_gen,
    uri = excluded.uri,
    size_bytes = excluded.size_bytes,
    version = excluded.version,
    state = CASE WHEN d.version IS DISTINCT FROM excluded.version AND d.state IN ('done', 'dead')
                 THEN 'pending' ELSE d.state END,
    attempts = CASE WHEN d.version IS DISTINCT FROM excluded.version AND d.state IN ('done', 'dead')
                    THEN 0 ELSE d.attempts END,
    available_at = CASE WHEN d.version IS DISTINCT FROM excluded.version AND d.state IN ('done', 'dead')
                        THEN now() ELSE d.available_at END,
    updated_at = CASE WHEN d.version IS DISTINCT FROM excluded.version THEN now() ELSE d.updated_at END

-- notify_work --
-- Wake the run's idle workers (delivered when the transaction commits); the channel is
-- docmill_<run_id>, named by notify_channel() in Python.
SELECT pg_notify(%(channel)s, '')

-- source_versions --
-- What the run holds of every document of one source (the caller asks for one row over its limit).
SELECT doc_key, version, state, uri FROM documents WHERE run_id = %(run_id)s AND source = %(source)s
LIMIT %(limit)s

-- count_source_documents --
-- Documents of one source.
SELECT count(*) FROM documents WHERE run_id = %(run_id)s AND source = %(source)s

-- remove_unseen --
-- Delete the documents a finished discovery pass did not see; chunks, attempts and edges go with them.
-- Each leaves a 'removed' event (the leader's) in the same statement.
WITH gone AS (
    DELETE FROM documents
    WHERE run_id = %(run_id)s AND source = %(source)s AND seen_gen < %(generation)s
    RETURNING id, run_id, uri, source),
logged AS (
    INSERT INTO events (run_id, document_id, kind, worker_id, detail)
    SELECT g.run_id, g.id, 'removed', r.leader_id,
           jsonb_build_object('uri', g.uri, 'reason', 'no longer in source ' || g.source)
    FROM gone g JOIN runs r ON r.run_id = g.run_id)
SELECT uri FROM gone ORDER BY id

-- claim_documents --
-- One statement, one round trip: lease up to %(limit)s documents (pending and due, or claimed with a
-- lapsed lease; priority, then age) and dead-letter lapsed claims that used every attempt.
-- Each branch walks its partial index and skips rows other claimers hold (SKIP LOCKED), so
-- concurrent claimers never wait for each other and never get the same row. The lapsed branch
-- leaves out rows that used every attempt: the buried branch dead-letters those instead of
-- looping. The same statement writes the attempts history (it closes what a lost earlier holder
-- left open and opens one row per claim) and the trace.
-- It commits without waiting for the WAL flush (set_config … true: this transaction only). Should
-- the server crash before the flush, the claim is forgotten and the document is claimed again by
-- someone: the first holder's completion is then fenced off (its lease token is unknown), so no
-- result is lost or doubled. Completions, failures and releases keep synchronous commits.
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
), buried AS (
    UPDATE documents
    SET state = 'dead', lease_token = NULL, claimed_by = NULL, lease_expires_at = NULL,
        error_class = 'WorkerLost',
        last_error = 'the worker holding it stopped without finishing, ' || attempts || ' time(s) '
                     || '(crashed, killed, or out of memory while processing this document)',
        updated_at = now()
    WHERE id IN (SELECT id FROM documents
                 WHERE run_id = %(run_id)s AND state = 'claimed' AND lease_expires_at < now()
                   AND attempts >= %(max_attempts)s
                 FOR UPDATE SKIP LOCKED)
    RETURNING id, run_id, error_class, last_error
), buried_closed AS (
    UPDATE attempts SET outcome = 'lost', finished_at = now(),
        error_class = coalesce(error_class, 'WorkerLost'),
        error_message = coalesce(error_message, 'lease expired before the worker finished')
    WHERE document_id IN (SELECT id FROM buried) AND outcome IS NULL
    RETURNING run_id, document_id, worker_id, attempt
), pending AS (
    SELECT id, priority FROM documents
    WHERE run_id = %(run_id)s AND state = 'pending' AND available_at <= now()
    ORDER BY priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), lapsed AS (
    SELECT id, priority FROM documents
    WHERE run_id = %(run_id)s AND state = 'claimed' AND lease_expires_at < now()
      AND attempts < %(max_attempts)s
    ORDER BY priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT id, priority FROM pending UNION ALL SELECT id, priority FROM lapsed) AS u
    ORDER BY priority DESC, id
    LIMIT %(limit)s
), claimed AS (
    UPDATE documents AS d
    SET state = 'claimed', lease_token = %(token_prefix)s || '-' || d.id, claimed_by = %(worker_id)s,
        attempts = d.attempts + 1, lease_expires_at = now() + make_interval(secs => %(lease)s),
        updated_at = now()
    FROM picked WHERE d.id = picked.id
    RETURNING d.id, d.run_id, d.source, d.doc_key, d.uri, d.attempts, d.lease_token, d.version,
              d.content_hash, d.depth, d.lease_expires_at
), closed AS (
    UPDATE attempts SET outcome = 'lost', finished_at = now(),
        error_class = coalesce(error_class, 'WorkerLost'),
        error_message = coalesce(error_message, 'lease expired before the worker finished')
    WHERE document_id IN (SELECT id FROM claimed WHERE attempts > 1) AND outcome IS NULL
    RETURNING run_id, document_id, worker_id, attempt
), opened AS (
    INSERT INTO attempts (document_id, run_id, attempt, worker_id, lease_token)
    SELECT id, run_id, attempts, %(worker_id)s, lease_token FROM claimed
), logged AS (
    -- The trace: lost holders (of buried and of re-claimed documents), the dead letters, the claims.
    INSERT INTO events (run_id, document_id, kind, worker_id, detail)
    SELECT run_id, document_id, 'lost', worker_id,
           jsonb_build_object('attempt', attempt, 'message', 'lease expired before the worker finished')
    FROM (SELECT * FROM buried_closed UNION ALL SELECT * FROM closed) AS lost
    UNION ALL
    SELECT run_id, id, 'dead', NULL, jsonb_build_object('error_class', error_class, 'message', last_error)
    FROM buried
    UNION ALL
    SELECT run_id, id, 'claimed', %(worker_id)s,
           jsonb_build_object('attempt', attempts, 'lease_expires_at', extract(epoch FROM lease_expires_at))
    FROM claimed
)
SELECT id, run_id, source, doc_key, uri, attempts, lease_token, version, content_hash, depth
FROM claimed, async_commit

-- claims_of_prefix --
-- The documents one claim statement leased (its tokens share a prefix): how a claimer whose
-- connection broke mid-statement learns whether that statement committed.
SELECT id, run_id, source, doc_key, uri, attempts, lease_token, version, content_hash, depth
FROM documents
WHERE run_id = %(run_id)s AND state = 'claimed' AND claimed_by = %(worker_id)s
  AND starts_with(lease_token, %(token_prefix)s || '-')

-- remove_vanished --
-- Fenced: delete a held document whose file was deleted from its source after discovery, with its
-- 'removed' event, in one statement.
WITH gone AS (
    DELETE FROM documents
    WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'claimed'
    RETURNING id, run_id, uri, source),
logged AS (
    INSERT INTO events (run_id, document_id, kind, worker_id, detail)
    SELECT run_id, id, 'removed', %(worker_id)s,
           jsonb_build_object('uri', uri, 'reason', 'deleted from source ' || source || ' while queued')
    FROM gone)
SELECT count(*) FROM gone

-- held_by --
-- The documents one worker holds claimed now.
SELECT id, run_id, source, doc_key, uri, attempts, lease_token, version, content_hash, depth
FROM documents WHERE run_id = %(run_id)s AND state = 'claimed' AND claimed_by = %(worker_id)s

-- extend_leases --
-- Push leases forward while their holder still has them.
UPDATE documents SET lease_expires_at = now() + make_interval(secs => %(lease)s)
WHERE lease_token = ANY(%(tokens)s::text[]) AND state = 'claimed'
RETURNING lease_token

-- complete_documents --
-- Fenced completion of a batch of documents in one statement (one round trip, one commit). Each
-- document whose lease still holds is marked done (pending again when a newer version was discovered
-- meanwhile) and gets its new chunks: rows 0..n-1 are written over the old ones of the same ordinal,
-- older rows beyond n are dropped (disjoint rows, so the order in which the two sub-statements run
-- does not matter). A fenced document writes nothing but its attempt's closing: fenced. Each attempt
-- closes as done or fenced with its trace event, and the chunk vectors join the embedding cache (keys
-- sorted by the caller: two completions caching overlapping texts take them in one order).
-- Returns per document, in input order, its id and new state (NULL when fenced).
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::text[], %(versions)s::text[],
                         %(content_hashes)s::text[], %(titles)s::text[], %(mimes)s::text[],
                         %(chunk_counts)s::integer[], %(links)s::jsonb[], %(metadata)s::jsonb[],
                         %(details)s::jsonb[])
        WITH ORDINALITY AS t (id, lease_token, version, content_hash, title, mime, chunk_count, links,
                              metadata, detail, n)
), done AS (
    UPDATE documents AS d
    SET state = CASE WHEN d.version IS NOT DISTINCT FROM i.version THEN 'done' ELSE 'pending' END,
        attempts = CASE WHEN d.version IS NOT DISTINCT FROM i.version THEN d.attempts ELSE 0 END,
        lease_token = NULL, claimed_by = NULL, lease_expires_at = NULL,
        done_version = i.version, content_hash = i.content_hash, title = i.title, mime = i.mime,
        chunk_count = i.chunk_count, links = i.links, metadata = i.metadata,
        last_error = NULL, error_class = NULL, done_at = now(), updated_at = now()
    FROM input AS i
    WHERE d.id = i.id AND d.lease_token = i.lease_token AND d.state = 'claimed'
    RETURNING d.id, d.state, i.chunk_count
), dropped AS (
    DELETE FROM chunks AS c USING done
    WHERE c.document_id = done.id AND c.ordinal >= done.chunk_count
), written AS (
    INSERT INTO chunks (document_id, ordinal, text, heading_path, page, char_start, char_end, token_count,
                        text_hash, dims, embedding)
    SELECT c.document_id, c.ordinal, c.text, c.heading_path, c.page, c.char_start, c.char_end,
           c.token_count, c.text_hash, c.dims, c.embedding
    FROM unnest(%(chunk_documents)s::bigint[], %(ordinals)s::integer[], %(texts)s::text[],
                %(heading_paths)s::jsonb[], %(pages)s::integer[], %(char_starts)s::integer[],
                %(char_ends)s::integer[], %(token_counts)s::integer[], %(text_hashes)s::text[],
                %(dims)s::smallint[], %(embeddings)b::vector[])
        AS c (document_id, ordinal, text, heading_path, page, char_start, char_end, token_count,
              text_hash, dims, embedding)
    WHERE c.document_id IN (SELECT id FROM done)
    ON CONFLICT (document_id, ordinal) DO UPDATE
    SET text = excluded.text, heading_path = excluded.heading_path, page = excluded.page,
        char_start = excluded.char_start, char_end = excluded.char_end,
        token_count = excluded.token_count, text_hash = excluded.text_hash, dims = excluded.dims,
        embedding = excluded.embedding
), cached AS (
    INSERT INTO embedding_cache (model_id, text_hash, embedding)
    SELECT * FROM unnest(%(cache_models)s::text[], %(cache_hashes)s::text[], %(cache_blobs)s::bytea[])
    ON CONFLICT DO NOTHING
), closed AS (
    UPDATE attempts AS a
    SET outcome = CASE WHEN done.id IS NULL THEN 'fenced' ELSE 'done' END,
        finished_at = now(),
        error_class = CASE WHEN done.id IS NULL THEN 'LeaseLost' END,
        error_message = CASE WHEN done.id IS NULL THEN 'completion rejected: lease lost' END
    FROM input AS i LEFT JOIN done ON done.id = i.id
    WHERE a.lease_token = i.lease_token
    RETURNING a.run_id, a.document_id, a.worker_id, a.attempt, a.outcome, i.detail, done.state
), logged AS (
    -- The trace's done (with the caller's detail: chunks, content hash) or fenced event.
    INSERT INTO events (run_id, document_id, kind, worker_id, detail)
    SELECT run_id, document_id, outcome, worker_id,
           CASE WHEN outcome = 'done' THEN detail || jsonb_build_object('state', state)
                ELSE jsonb_build_object('reason', 'completion rejected: the lease was lost') END
           || jsonb_build_object('attempt', attempt)
    FROM closed
)
SELECT i.id, done.state FROM input AS i LEFT JOIN done ON done.id = i.id ORDER BY i.n

-- completions_of_tokens --
-- How a completion whose connection broke mid-statement learns whether it committed: the outcome
-- of each attempt it closed (done or fenced when it did; open or lost when it did not).
SELECT lease_token, outcome FROM attempts WHERE lease_token = ANY(%(tokens)s::text[])

-- mark_unchanged --
-- Fenced completion of a document whose content did not change: chunks stay as they are.
UPDATE documents
SET state = CASE WHEN version IS NOT DISTINCT FROM %(version)s::text THEN 'done' ELSE 'pending' END,
    lease_token = NULL, claimed_by = NULL, lease_expires_at = NULL, done_version = %(version)s,
    last_error = NULL, error_class = NULL, done_at = now(), updated_at = now()
WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'claimed'
RETURNING state

-- cached_vectors --
-- Vectors already computed for some chunk texts.
SELECT text_hash, embedding FROM embedding_cache
WHERE model_id = %(model_id)s AND text_hash = ANY(%(hashes)s::text[])

-- mark_failed --
-- Fenced failure: back to pending after a delay, or dead.
UPDATE documents
SET state = %(state)s, available_at = now() + make_interval(secs => %(delay)s), lease_token = NULL,
    claimed_by = NULL, lease_expires_at = NULL, last_error = %(message)s, error_class = %(error_class)s,
    updated_at = now()
WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'claimed'

-- mark_released --
-- Give documents back without spending an attempt.
UPDATE documents AS d
SET state = 'pending', attempts = greatest(d.attempts - 1, 0), available_at = now(), lease_token = NULL,
    claimed_by = NULL, lease_expires_at = NULL, updated_at = now()
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS t (id, token)
WHERE d.id = t.id AND d.lease_token = t.token AND d.state = 'claimed'
RETURNING t.token

-- finish_attempt --
-- Close the history row of a claim with its outcome, and log it as an event (%(detail)s, a JSON
-- object, gets the attempt number and the document's resulting state).
WITH finished AS (
    UPDATE attempts SET outcome = %(outcome)s, finished_at = now(), error_class = %(error_class)s,
        error_message = %(message)s
    WHERE lease_token = %(lease_token)s
    RETURNING run_id, document_id, worker_id, attempt)
INSERT INTO events (run_id, document_id, kind, worker_id, detail)
SELECT f.run_id, f.document_id, %(outcome)s, f.worker_id,
       %(detail)s::jsonb || jsonb_build_object('attempt', f.attempt, 'state', d.state)
FROM finished f JOIN documents d ON d.id = f.document_id

-- finish_released_attempts --
-- Close the history rows of released claims, with their events.
WITH finished AS (
    UPDATE attempts SET outcome = 'released', finished_at = now(), error_class = NULL, error_message = NULL
    WHERE lease_token = ANY(%(tokens)s::text[])
    RETURNING run_id, document_id, worker_id, attempt)
INSERT INTO events (run_id, document_id, kind, worker_id, detail)
SELECT run_id, document_id, 'released', worker_id,
       jsonb_build_object('attempt', attempt, 'state', 'pending', 'reason', 'given back unprocessed (stopping)')
FROM finished

-- register_worker --
-- A worker process starts.
INSERT INTO workers (worker_id, run_id, host, pid, pid_ns)
VALUES (%(worker_id)s, %(run_id)s, %(host)s, %(pid)s, %(pid_ns)s)
ON CONFLICT (worker_id) DO UPDATE SET run_id = excluded.run_id, host = excluded.host, pid = excluded.pid,
    pid_ns = excluded.pid_ns, started_at = now(), last_beat_at = now(), stopped_at = NULL, current_docs = 0, processed = 0, failed = 0

-- beat_worker --
-- A worker is alive; its counters.
UPDATE workers SET last_beat_at = now(), current_docs = %(current_docs)s, processed = %(processed)s,
    failed = %(failed)s
WHERE worker_id = %(worker_id)s

-- stop_worker --
-- A worker exits cleanly.
UPDATE workers SET stopped_at = now(), current_docs = 0 WHERE worker_id = %(worker_id)s

-- local_workers --
-- The run's workers not known to have stopped that share this machine's host name and PID namespace
-- (their processes are visible from here).
SELECT worker_id, pid FROM workers
WHERE run_id = %(run_id)s AND host = %(host)s AND pid_ns = %(pid_ns)s AND stopped_at IS NULL

-- expire_workers --
-- Workers whose process is gone: their claims, leadership and finalize leases end now (the next claim
-- takes the documents over as it does any lapsed lease, spending the attempt), and they are marked
-- stopped. The open attempts say why.
WITH gone AS (
    UPDATE workers SET stopped_at = now(), current_docs = 0
    WHERE worker_id = ANY(%(worker_ids)s::text[]) AND run_id = %(run_id)s AND stopped_at IS NULL
    RETURNING worker_id, pid),
docs AS (
    UPDATE documents SET lease_expires_at = now()
    WHERE run_id = %(run_id)s AND state = 'claimed' AND claimed_by IN (SELECT worker_id FROM gone)
    RETURNING lease_token),
noted AS (
    UPDATE attempts a SET error_message = 'worker ' || g.worker_id || ' (pid ' || g.pid || ') exited while '
                                          || 'holding the document'
    FROM gone g
    WHERE a.lease_token IN (SELECT lease_token FROM docs) AND a.worker_id = g.worker_id
      AND a.finished_at IS NULL),
leases AS (
    UPDATE runs
    SET leader_expires_at = CASE WHEN leader_id IN (SELECT worker_id FROM gone) THEN now()
                                 ELSE leader_expires_at END,
        finalize_expires_at = CASE WHEN finalizer_id IN (SELECT worker_id FROM gone) THEN now()
                                   ELSE finalize_expires_at END
    WHERE run_id = %(run_id)s)
SELECT count(*) FROM docs

-- counts --
-- Documents of a run by state.
SELECT state, count(*) FROM documents WHERE run_id = %(run_id)s GROUP BY state

-- begin_finalize --
-- Last man standing: exactly one worker moves a drained run to finalizing (or takes a lapsed finalize).
-- Concurrent callers queue on the run's row lock; the losers re-check the state and match nothing.
UPDATE runs
SET state = 'finalizing', finalizer_id = %(worker_id)s,
    finalize_expires_at = now() + make_interval(secs => %(lease)s), updated_at = now()
WHERE run_id = %(run_id)s
  AND discovered_gen >= discovery_gen
  AND (state = 'ingesting' OR (state = 'finalizing' AND finalize_expires_at < now()))
  AND NOT EXISTS (SELECT 1 FROM documents
                  WHERE run_id = %(run_id)s AND state IN ('pending', 'claimed'))

-- extend_finalize --
-- Keep a long finalize alive.
UPDATE runs SET finalize_expires_at = now() + make_interval(secs => %(lease)s)
WHERE run_id = %(run_id)s AND state = 'finalizing' AND finalizer_id = %(worker_id)s

-- complete_finalize --
-- The finalizer marks the run complete.
UPDATE runs
SET state = 'complete', finalizer_id = NULL, finalize_expires_at = NULL,
    finalize_count = finalize_count + 1, updated_at = now()
WHERE run_id = %(run_id)s AND state = 'finalizing' AND finalizer_id = %(worker_id)s

-- finalize_fingerprint --
-- The run's done documents as one string (count, newest change, id sum: a change, an addition or a
-- removal moves it), next to the one the stored relationships were computed from.
SELECT (SELECT count(*) || '/' || coalesce(extract(epoch FROM max(updated_at)), 0) || '/' || coalesce(sum(id), 0)
        FROM documents WHERE run_id = %(run_id)s AND state = 'done'),
       (SELECT fingerprint FROM finalized_inputs WHERE run_id = %(run_id)s)

-- store_fingerprint --
-- Remember what the run's relationships were computed from.
INSERT INTO finalized_inputs (run_id, fingerprint) VALUES (%(run_id)s, %(fingerprint)s)
ON CONFLICT (run_id) DO UPDATE SET fingerprint = excluded.fingerprint

-- delete_relationships --
-- Drop the run's previous edges.
DELETE FROM relationships WHERE run_id = %(run_id)s

-- insert_relationships --
-- Store the run's edges.
INSERT INTO relationships (run_id, source_id, target_id, kind, score)
SELECT %(run_id)s, s, t, k, sc
FROM unnest(%(sources)s::bigint[], %(targets)s::bigint[], %(kinds)s::text[], %(scores)s::float8[])
     AS e (s, t, k, sc)
ON CONFLICT DO NOTHING

-- relationships --
-- The run's edges.
SELECT source_id, target_id, kind, score FROM relationships WHERE run_id = %(run_id)s
ORDER BY kind, source_id, score DESC

-- finished_documents --
-- Done documents with their link targets.
SELECT id, source, doc_key, uri, links FROM documents WHERE run_id = %(run_id)s AND state = 'done'
ORDER BY id

-- document_vectors --
-- Mean chunk vector of every finished document with chunks (pgvector's avg).
SELECT c.document_id, avg(c.embedding) FROM chunks c JOIN documents d ON d.id = c.document_id
WHERE d.run_id = %(run_id)s AND d.state = 'done'
GROUP BY c.document_id ORDER BY c.document_id

-- hnsw_index_exists --
-- Whether the HNSW index of one vector dimension exists yet.
SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %(name)s

-- create_hnsw_index --
-- Cosine HNSW index of the chunks of one dimension (pgvector indexes need a fixed dimension).
CREATE INDEX IF NOT EXISTS chunks_hnsw_{dims} ON chunks
    USING hnsw ((embedding::vector({dims})) vector_cosine_ops) WHERE dims = {dims}

-- store_dimensions --
-- Vector dimensions present in the store (to explain a query of the wrong size).
SELECT DISTINCT dims FROM chunks

-- vector_search --
-- Nearest chunks by cosine distance, through the HNSW index of this dimension; the run filter is
-- applied to the index's candidates (hnsw.ef_search of them), so the caller checks for a short answer.
SELECT c.id, c.document_id, d.uri, d.title, c.heading_path, c.page, c.ordinal, c.char_start, c.char_end,
       c.text, 1 - c.distance AS score
FROM (SELECT id, document_id, heading_path, page, ordinal, char_start, char_end, text,
             embedding::vector({dims}) <=> %(query)b::vector({dims}) AS distance
      FROM chunks WHERE dims = {dims}
      ORDER BY embedding::vector({dims}) <=> %(query)b::vector({dims})
      LIMIT %(candidates)s) AS c
JOIN documents d ON d.id = c.document_id
{run_filter}
ORDER BY c.distance, c.id
LIMIT %(k)s

-- vector_search_exact --
-- Nearest chunks by exact cosine distance (when the index's candidates were too few); ordering by
-- the score rather than by the distance operator keeps the planner off the approximate index.
SELECT c.id, c.document_id, d.uri, d.title, c.heading_path, c.page, c.ordinal, c.char_start, c.char_end,
       c.text, 1 - (c.embedding::vector({dims}) <=> %(query)b::vector({dims})) AS score
FROM chunks c JOIN documents d ON d.id = c.document_id
WHERE c.dims = {dims} {run_filter}
ORDER BY score DESC, c.id
LIMIT %(k)s

-- text_search --
-- Full-text search: the question's words ORed (recall, as on SQLite), ranked by cover density.
SELECT c.id, c.document_id, d.uri, d.title, c.heading_path, c.page, c.ordinal, c.char_start, c.char_end,
       c.text, ts_rank_cd(c.tsv, q.query) AS score
FROM websearch_to_tsquery('english', %(query)s) AS q (query), chunks c
JOIN documents d ON d.id = c.document_id
WHERE c.tsv @@ q.query {run_filter}
ORDER BY score DESC, c.id
LIMIT %(k)s

-- documents --
-- One row per document.
SELECT id, run_id, source, doc_key, uri, state, attempts, chunk_count, title, last_error, error_class,
       extract(epoch FROM updated_at)::float8
FROM documents {where} ORDER BY id {limit}

-- chunk_count --
-- Chunks of a run.
SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.run_id = %(run_id)s

-- ==== Operations: status, events (trace), dead letters, claims, alerts, housekeeping ============

-- discovery_events --
-- New and changed documents of one upsert batch, logged by the run's leader.
INSERT INTO events (run_id, document_id, kind, worker_id, detail)
SELECT d.run_id, d.id, t.kind, r.leader_id,
       jsonb_build_object('uri', d.uri, 'version', d.version, 'size', d.size_bytes, 'state', d.state)
FROM unnest(%(keys)s::text[], %(kinds)s::text[]) AS t (k, kind)
JOIN documents d ON d.run_id = %(run_id)s AND d.source = %(source)s AND d.doc_key = t.k
JOIN runs r ON r.run_id = d.run_id

-- worker_rows --
-- Workers of a run with the age of their last heartbeat.
SELECT worker_id, run_id, host, pid, extract(epoch FROM started_at)::float8,
       extract(epoch FROM last_beat_at)::float8, extract(epoch FROM stopped_at)::float8, current_docs,
       processed, failed, extract(epoch FROM now() - last_beat_at)::float8, coalesce(pid_ns, '')
FROM workers WHERE run_id = %(run_id)s ORDER BY started_at DESC

-- recent_completions --
-- Attempts that finished well in a recent window: the exact count (an index-only walk of
-- attempts_run_outcome), and mean and 95th percentile over the newest 5000 of each outcome (read
-- backwards from the same index), so a window of half a million completions stays cheap.
SELECT (SELECT count(*) FROM attempts
        WHERE run_id = %(run_id)s AND outcome IN ('done', 'unchanged')
          AND finished_at >= now() - make_interval(secs => %(window)s)),
       avg(s.d), percentile_cont(0.95) WITHIN GROUP (ORDER BY s.d)
FROM unnest(ARRAY['done', 'unchanged']) AS o (outcome)
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM finished_at - claimed_at)::float8 AS d FROM attempts
    WHERE run_id = %(run_id)s AND outcome = o.outcome
      AND finished_at >= now() - make_interval(secs => %(window)s)
    ORDER BY finished_at DESC LIMIT 5000) AS s

-- schema_version --
-- The store's schema version.
SELECT max(version) FROM schema_version

-- failure_counts --
-- Dead documents of a run by error class.
SELECT coalesce(error_class, 'unknown'), count(*) FROM documents
WHERE run_id = %(run_id)s AND state = 'dead' GROUP BY 1 ORDER BY 2 DESC, 1

-- claims --
-- Documents held now, with when their current attempt began; lapsed leases first, then by expiry, so
-- the walk of documents_claimed stops at %(limit)s (NULL: all). Each attempt is looked up by its
-- unique lease token (LIMIT 1 keeps the lookup a per-row probe: joined whole, a thousand claims made
-- the planner hash all of attempts, depending on ANALYZE's sample).
SELECT d.id, d.run_id, d.uri, d.claimed_by, d.attempts, extract(epoch FROM a.claimed_at)::float8,
       extract(epoch FROM d.lease_expires_at)::float8,
       extract(epoch FROM now() - coalesce(a.claimed_at, d.updated_at))::float8, d.lease_expires_at < now()
FROM documents d
LEFT JOIN LATERAL (SELECT claimed_at FROM attempts WHERE lease_token = d.lease_token LIMIT 1) a ON true
WHERE d.run_id = %(run_id)s AND d.state = 'claimed'
ORDER BY d.lease_expires_at, d.id
LIMIT %(limit)s

-- recent_errors --
-- The run's latest attempts that ended badly in the last hour: the newest few of each bad outcome,
-- each read backwards from attempts_run_outcome (a LATERAL per outcome, so no scan of the history).
SELECT a.document_id, d.uri, a.worker_id, extract(epoch FROM a.finished_at)::float8, a.outcome,
       a.error_class, a.error_message
FROM unnest(ARRAY['retry', 'dead', 'lost', 'fenced']) AS o (outcome)
CROSS JOIN LATERAL (
    SELECT document_id, worker_id, finished_at, outcome, error_class, error_message FROM attempts
    WHERE run_id = %(run_id)s AND outcome = o.outcome AND finished_at >= now() - interval '1 hour'
    ORDER BY finished_at DESC LIMIT %(limit)s) AS a
JOIN documents d ON d.id = a.document_id
ORDER BY a.finished_at DESC LIMIT %(limit)s

-- find_documents --
-- Documents of a run named by id, URI or key.
SELECT id FROM documents
WHERE run_id = %(run_id)s
  AND (id::text = ANY(%(idents)s::text[]) OR uri = ANY(%(idents)s::text[]) OR doc_key = ANY(%(idents)s::text[]))
ORDER BY id

-- find_removed_documents --
-- Documents that no longer exist, named by the URI their events recorded.
SELECT DISTINCT document_id FROM events
WHERE run_id = %(run_id)s AND kind IN ('discovered', 'removed', 'purged')
  AND detail ->> 'uri' = ANY(%(idents)s::text[])
ORDER BY document_id

-- document_rows --
-- Documents by id.
SELECT id, run_id, source, doc_key, uri, state, attempts, chunk_count, title, last_error, error_class,
       extract(epoch FROM updated_at)::float8
FROM documents WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id

-- events --
-- One document's history.
SELECT id, run_id, document_id, extract(epoch FROM at)::float8, kind, worker_id, detail FROM events
WHERE document_id = %(document_id)s ORDER BY id

-- relationship_count --
-- Edges from or to one document.
SELECT count(*) FROM relationships WHERE source_id = %(id)s OR target_id = %(id)s

-- requeue --
-- Operator retry: dead or waiting documents back to pending now with attempts reset (last_error stays
-- until the document is done), each with a 'requeued' event saying what it was before.
WITH old AS (
    SELECT id, state, attempts, last_error FROM documents
    WHERE run_id = %(run_id)s AND id = ANY(%(ids)s::bigint[]) AND state IN ('dead', 'pending')
    FOR UPDATE),
moved AS (
    UPDATE documents d SET state = 'pending', attempts = 0, available_at = now(), updated_at = now()
    FROM old WHERE d.id = old.id
    RETURNING d.id, d.run_id, old.state, old.attempts, old.last_error),
logged AS (
    INSERT INTO events (run_id, document_id, kind, detail)
    SELECT run_id, id, 'requeued',
           jsonb_build_object('previous_state', state, 'attempts', attempts, 'last_error', last_error)
    FROM moved)
SELECT id FROM moved ORDER BY id

-- purge_dead --
-- Delete dead documents older than %(age)s seconds (chunks, attempts and edges go with them), each
-- with a 'purged' event.
WITH gone AS (
    DELETE FROM documents
    WHERE state = 'dead' AND updated_at < now() - make_interval(secs => %(age)s)
      AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s::text)
    RETURNING id, run_id, uri, error_class, last_error),
logged AS (
    INSERT INTO events (run_id, document_id, kind, detail)
    SELECT run_id, id, 'purged', jsonb_build_object('uri', uri, 'error_class', error_class, 'message', last_error)
    FROM gone)
SELECT count(*) FROM gone

-- reset_claims --
-- Release claims whose current attempt began at least %(age)s seconds ago, without spending an
-- attempt; their attempts close as released and each gets a 'reset' event. The holder's late
-- completion is then fenced (its lease token no longer matches).
WITH stuck AS (
    SELECT d.id, d.lease_token FROM documents d JOIN attempts a ON a.lease_token = d.lease_token
    WHERE d.run_id = %(run_id)s AND d.state = 'claimed'
      AND a.claimed_at <= now() - make_interval(secs => %(age)s)
    FOR UPDATE OF d),
reset AS (
    UPDATE documents d
    SET state = 'pending', attempts = greatest(d.attempts - 1, 0), available_at = now(), lease_token = NULL,
        claimed_by = NULL, lease_expires_at = NULL, updated_at = now()
    FROM stuck WHERE d.id = stuck.id
    RETURNING stuck.lease_token),
closed AS (
    UPDATE attempts a SET outcome = 'released', finished_at = now(), error_class = 'ClaimReset',
        error_message = %(reason)s
    FROM reset WHERE a.lease_token = reset.lease_token
    RETURNING a.run_id, a.document_id, a.worker_id, a.attempt)
INSERT INTO events (run_id, document_id, kind, worker_id, detail)
SELECT run_id, document_id, 'reset', worker_id,
       jsonb_build_object('attempt', attempt, 'reason', %(reason)s, 'state', 'pending')
FROM closed

-- swap_alert_state --
-- Remember this alert check's dead count and return the previous check's (NULL the first time).
WITH previous AS (SELECT dead_count FROM alert_state WHERE run_id = %(run_id)s FOR UPDATE),
stored AS (
    INSERT INTO alert_state (run_id, dead_count) VALUES (%(run_id)s, %(dead_count)s)
    ON CONFLICT (run_id) DO UPDATE SET dead_count = excluded.dead_count, checked_at = now())
SELECT (SELECT dead_count FROM previous)

-- event_runs --
-- Runs whose events may need pruning.
SELECT run_id FROM runs

-- prune_events --
-- Events of one run older than the retention (walks events_run_at).
DELETE FROM events WHERE run_id = %(run_id)s AND at < now() - make_interval(secs => %(age)s)

-- finished_runs --
-- Runs complete for longer than %(age)s seconds.
SELECT run_id FROM runs WHERE state = 'complete' AND updated_at < now() - make_interval(secs => %(age)s)

-- cleanup_attempts --
-- Attempts history of one finished run.
DELETE FROM attempts WHERE run_id = %(run_id)s

-- cleanup_events --
-- Events of one finished run.
DELETE FROM events WHERE run_id = %(run_id)s

-- cleanup_workers --
-- Worker rows of one finished run.
DELETE FROM workers WHERE run_id = %(run_id)s
