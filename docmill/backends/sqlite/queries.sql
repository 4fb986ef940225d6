-- docmill SQLite queries. now() is the database clock in epoch seconds (registered per connection).

-- insert_run --
-- Create a run row if it does not exist yet.
INSERT INTO runs (run_id, config_json, created_at, updated_at)
VALUES (:run_id, :config_json, now(), now())
ON CONFLICT (run_id) DO NOTHING

-- reopen_run --
-- A new ingest of a drained run (or, with :rediscover, of an interrupted one whose last pass had
-- finished) asks for another discovery pass and clears the shutdown flag.
UPDATE runs
SET state = 'ingesting', discovery_gen = discovery_gen + 1, shutdown_requested = 0,
    finalizer_id = NULL, finalize_expires_at = NULL, updated_at = now()
WHERE run_id = :run_id
  AND (state <> 'ingesting' OR shutdown_requested = 1 OR (:rediscover AND discovered_gen >= discovery_gen))

-- get_run --
-- One run.
SELECT run_id, state, discovery_gen, discovered_gen, leader_id, leader_expires_at,
       shutdown_requested, finalize_count, created_at, updated_at, config_json
FROM runs WHERE run_id = :run_id

-- list_runs --
-- Every run, newest first.
SELECT run_id, state, discovery_gen, discovered_gen, leader_id, leader_expires_at,
       shutdown_requested, finalize_count, created_at, updated_at, config_json
FROM runs ORDER BY updated_at DESC

-- acquire_leadership --
-- Take the leader lease when free or lapsed, or renew our own.
UPDATE runs SET leader_id = :worker_id, leader_expires_at = now() + :ttl
WHERE run_id = :run_id
  AND (leader_id IS NULL OR leader_id = :worker_id OR leader_expires_at < now())

-- release_leadership --
-- Give the leader lease up.
UPDATE runs SET leader_id = NULL, leader_expires_at = NULL
WHERE run_id = :run_id AND leader_id = :worker_id

-- finish_discovery --
-- Mark a discovery pass as complete.
UPDATE runs SET discovered_gen = :generation, updated_at = now()
WHERE run_id = :run_id AND discovered_gen < :generation

-- request_shutdown --
-- Ask every worker of the run to stop.
UPDATE runs SET shutdown_requested = 1, updated_at = now() WHERE run_id = :run_id

-- existing_versions --
-- What the run already knows of some keys of one source (chunked by the caller).
SELECT doc_key, version, state, uri FROM documents
WHERE run_id = ? AND source = ? AND doc_key IN ({keys})

-- upsert_document --
-- Enqueue a discovered document; a changed version sends a finished one back to pending.
INSERT INTO documents (run_id, source, doc_key, uri, priority, depth, size_bytes, version, seen_gen,
                       available_at, discovered_at, updated_at)
VALUES (:run_id, :source, :doc_key, :uri, :priority, :depth, :size, :version, :generation,
        now(), now(), now())
ON CONFLICT (run_id, source, doc_key) DO UPDATE SET
    seen_gen = excluded.seen_gen,
    uri = excluded.uri,
    size_bytes = excluded.size_bytes,
    version = excluded.version,
    state = CASE WHEN documents.version IS NOT excluded.version AND documents.state IN ('done', 'dead')
                 THEN 'pending' ELSE documents.state END,
    attempts = CASE WHEN documents.version IS NOT excluded.version AND documents.state IN ('done', 'dead')
                    THEN 0 ELSE documents.attempts END,
    available_at = CASE WHEN documents.version IS NOT excluded.version
                             AND documents.state IN ('done', 'dead')
                        THEN now() ELSE documents.available_at END,
    updated_at = CASE WHEN documents.version IS NOT excluded.version THEN now() ELSE documents.updated_at END

-- store_state --
-- Changes whenever another connection commits (data_version) or the schema changes; with the
-- connection's own total_changes, whether anything was written since the last look.
SELECT data_version, schema_version FROM pragma_data_version(), pragma_schema_version()

-- source_versions --
-- What the run holds of every document of one source (the caller asks for one row over its limit).
SELECT doc_key, version, state, uri FROM documents WHERE run_id = :run_id AND source = :source
LIMIT :limit

-- count_source_documents --
-- Documents of one source.
SELECT count(*) FROM documents WHERE run_id = :run_id AND source = :source

-- select_unseen --
-- Documents a finished discovery pass did not see.
SELECT id, uri FROM documents WHERE run_id = :run_id AND source = :source AND seen_gen < :generation

-- delete_document --
-- Remove a document; chunks, attempts and relationships go with it.
DELETE FROM documents WHERE id = :id

-- bury_exhausted --
-- Expired claims that already used every attempt go to the dead-letter queue instead of looping.
UPDATE documents
SET state = 'dead', lease_token = NULL, claimed_by = NULL, lease_expires_at = NULL,
    error_class = 'WorkerLost',
    last_error = 'the worker holding it stopped without finishing, ' || attempts || ' time(s) '
                 || '(crashed, killed, or out of memory while processing this document)',
    updated_at = now()
WHERE run_id = :run_id AND state = 'claimed' AND lease_expires_at < now() AND attempts >= :max_attempts
RETURNING id

-- close_lost_attempts --
-- Attempts whose lease lapsed without an outcome ended with the worker lost.
UPDATE attempts SET outcome = 'lost', finished_at = now(),
    error_class = coalesce(error_class, 'WorkerLost'),
    error_message = coalesce(error_message, 'lease expired before the worker finished')
WHERE document_id = :document_id AND outcome IS NULL

-- claim_documents --
-- Lease up to :limit documents: pending and due, or claimed with a lapsed lease; priority, then age.
-- Each branch walks its partial index in order and stops after :limit rows, so a claim costs the
-- same on a queue of a hundred documents or of a million.
UPDATE documents
SET state = 'claimed', lease_token = :token_prefix || '-' || id, claimed_by = :worker_id,
    attempts = attempts + 1, lease_expires_at = now() + :lease, updated_at = now()
WHERE id IN (
    SELECT id FROM (
        SELECT id, priority FROM (
            SELECT id, priority FROM documents INDEXED BY documents_pending
            WHERE run_id = :run_id AND state = 'pending' AND available_at <= now()
            ORDER BY priority DESC, id LIMIT :limit)
        UNION ALL
        SELECT id, priority FROM (
            SELECT id, priority FROM documents
            WHERE run_id = :run_id AND state = 'claimed' AND lease_expires_at < now()
            ORDER BY priority DESC, id LIMIT :limit))
    ORDER BY priority DESC, id
    LIMIT :limit)
RETURNING id, run_id, source, doc_key, uri, attempts, lease_token, version, content_hash, depth, priority

-- vanished_event --
-- A held document whose file was deleted from its source after discovery, just before it is deleted.
INSERT INTO events (run_id, document_id, at, kind, worker_id, detail)
SELECT run_id, id, now(), 'removed', :worker_id,
       json_object('uri', uri, 'reason', 'deleted from source ' || source || ' while queued')
FROM documents WHERE id = :id AND lease_token = :lease_token AND state = 'claimed'

-- delete_vanished --
-- Fenced: only while the caller still holds the document.
DELETE FROM documents WHERE id = :id AND lease_token = :lease_token AND state = 'claimed'

-- held_by --
-- The documents one worker holds claimed now.
SELECT id, run_id, source, doc_key, uri, attempts, lease_token, version, content_hash, depth
FROM documents WHERE run_id = :run_id AND state = 'claimed' AND claimed_by = :worker_id

-- insert_attempt --
-- Open the history row of a claim.
INSERT INTO attempts (document_id, run_id, attempt, worker_id, lease_token, claimed_at)
VALUES (:document_id, :run_id, :attempt, :worker_id, :lease_token, now())

-- extend_lease --
-- Push one lease forward while its holder still has it.
UPDATE documents SET lease_expires_at = now() + :lease
WHERE lease_token = :lease_token AND state = 'claimed'
RETURNING lease_token

-- mark_done --
-- Fenced completion: only the current lease holder can finish the document.
UPDATE documents
SET state = CASE WHEN version IS :version THEN 'done' ELSE 'pending' END,
    attempts = CASE WHEN version IS :version THEN attempts ELSE 0 END,
    lease_token = NULL, claimed_by = NULL, lease_expires_at = NULL,
    done_version = :version, content_hash = :content_hash, title = :title, mime = :mime,
    chunk_count = :chunk_count, links = :links, metadata = :metadata,
    last_error = NULL, error_class = NULL, done_at = now(), updated_at = now()
WHERE id = :id AND lease_token = :lease_token AND state = 'claimed'

-- mark_unchanged --
-- Fenced completion of a document whose content did not change: chunks stay as they are.
UPDATE documents
SET state = CASE WHEN version IS :version THEN 'done' ELSE 'pending' END,
    lease_token = NULL, claimed_by = NULL, lease_expires_at = NULL, done_version = :version,
    last_error = NULL, error_class = NULL, done_at = now(), updated_at = now()
WHERE id = :id AND lease_token = :lease_token AND state = 'claimed'

-- delete_chunks --
-- Drop a document's chunks before writing the new ones (same transaction).
DELETE FROM chunks WHERE document_id = :document_id

-- insert_chunk --
-- Store one chunk.
INSERT INTO chunks (document_id, ordinal, text, heading_path, page, char_start, char_end, token_count,
                    text_hash, embedding)
VALUES (:document_id, :ordinal, :text, :heading_path, :page, :char_start, :char_end, :token_count,
        :text_hash, :embedding)

-- cache_vector --
-- Remember a chunk text's vector for this model.
INSERT INTO embedding_cache (model_id, text_hash, embedding) VALUES (:model_id, :text_hash, :embedding)
ON CONFLICT DO NOTHING

-- cached_vectors --
-- Vectors already computed for some chunk texts (chunked by the caller).
SELECT text_hash, embedding FROM embedding_cache WHERE model_id = ? AND text_hash IN ({hashes})

-- mark_failed --
-- Fenced failure: back to pending after a delay, or dead.
UPDATE documents
SET state = :state, available_at = now() + :delay, lease_token = NULL, claimed_by = NULL,
    lease_expires_at = NULL, last_error = :message, error_class = :error_class, updated_at = now()
WHERE id = :id AND lease_token = :lease_token AND state = 'claimed'

-- mark_released --
-- Give a document back without spending an attempt.
UPDATE documents
SET state = 'pending', attempts = max(attempts - 1, 0), available_at = now(), lease_token = NULL,
    claimed_by = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = :id AND lease_token = :lease_token AND state = 'claimed'

-- finish_attempt --
-- Close the history row of a claim with its outcome.
UPDATE attempts SET outcome = :outcome, finished_at = now(), error_class = :error_class,
    error_message = :message
WHERE lease_token = :lease_token

-- register_worker --
-- A worker process starts.
INSERT INTO workers (worker_id, run_id, host, pid, pid_ns, started_at, last_beat_at)
VALUES (:worker_id, :run_id, :host, :pid, :pid_ns, now(), now())
ON CONFLICT (worker_id) DO UPDATE SET run_id = excluded.run_id, host = excluded.host, pid = excluded.pid,
    pid_ns = excluded.pid_ns, started_at = now(), last_beat_at = now(),
    stopped_at = NULL, current_docs = 0, processed = 0, failed = 0

-- beat_worker --
-- A worker is alive; its counters.
UPDATE workers SET last_beat_at = now(), current_docs = :current_docs, processed = :processed,
    failed = :failed
WHERE worker_id = :worker_id

-- stop_worker --
-- A worker exits cleanly.
UPDATE workers SET stopped_at = now(), current_docs = 0 WHERE worker_id = :worker_id

-- local_workers --
-- The run's workers not known to have stopped that share this machine's host name and PID namespace.
SELECT worker_id, pid FROM workers
WHERE run_id = :run_id AND host = :host AND pid_ns = :pid_ns AND stopped_at IS NULL

-- expire_worker_attempts --
-- A gone worker's open attempts say why they ended (the next claim closes them as lost).
UPDATE attempts SET error_message = 'worker ' || :worker_id || ' (pid '
                                    || coalesce((SELECT pid FROM workers WHERE worker_id = :worker_id), '?')
                                    || ') exited while holding the document'
WHERE worker_id = :worker_id AND finished_at IS NULL
  AND lease_token IN (SELECT lease_token FROM documents
                      WHERE run_id = :run_id AND state = 'claimed' AND claimed_by = :worker_id)

-- expire_worker_claims --
-- A gone worker's claims lapse now: the next claim takes them over as any lapsed lease.
UPDATE documents SET lease_expires_at = now()
WHERE run_id = :run_id AND state = 'claimed' AND claimed_by = :worker_id

-- expire_worker_leases --
-- A gone worker's leadership and finalize leases lapse now.
UPDATE runs
SET leader_expires_at = CASE WHEN leader_id = :worker_id THEN now() ELSE leader_expires_at END,
    finalize_expires_at = CASE WHEN finalizer_id = :worker_id THEN now() ELSE finalize_expires_at END
WHERE run_id = :run_id

-- stop_gone_worker --
-- A gone worker is marked stopped.
UPDATE workers SET stopped_at = now(), current_docs = 0 WHERE worker_id = :worker_id AND stopped_at IS NULL

-- counts --
-- Documents of a run by state.
SELECT state, count(*) FROM documents WHERE run_id = :run_id GROUP BY state

-- begin_finalize --
-- Last man standing: exactly one worker moves a drained run to finalizing (or takes a lapsed finalize).
UPDATE runs
SET state = 'finalizing', finalizer_id = :worker_id, finalize_expires_at = now() + :lease,
    updated_at = now()
WHERE run_id = :run_id
  AND discovered_gen >= discovery_gen
  AND (state = 'ingesting' OR (state = 'finalizing' AND finalize_expires_at < now()))
  AND NOT EXISTS (SELECT 1 FROM documents
                  WHERE run_id = :run_id AND state IN ('pending', 'claimed'))

-- extend_finalize --
-- Keep a long finalize alive.
UPDATE runs SET finalize_expires_at = now() + :lease
WHERE run_id = :run_id AND state = 'finalizing' AND finalizer_id = :worker_id

-- complete_finalize --
-- The finalizer marks the run complete.
UPDATE runs
SET state = 'complete', finalizer_id = NULL, finalize_expires_at = NULL,
    finalize_count = finalize_count + 1, updated_at = now()
WHERE run_id = :run_id AND state = 'finalizing' AND finalizer_id = :worker_id

-- finalize_fingerprint --
-- The run's done documents as one string (count, newest change, id sum: a change, an addition or a
-- removal moves it), next to the one the stored relationships were computed from.
SELECT (SELECT count(*) || '/' || coalesce(max(updated_at), 0) || '/' || coalesce(sum(id), 0)
        FROM documents WHERE run_id = :run_id AND state = 'done'),
       (SELECT fingerprint FROM finalized_inputs WHERE run_id = :run_id)

-- store_fingerprint --
-- Remember what the run's relationships were computed from.
INSERT INTO finalized_inputs (run_id, fingerprint) VALUES (:run_id, :fingerprint)
ON CONFLICT (run_id) DO UPDATE SET fingerprint = excluded.fingerprint

-- delete_relationships --
-- Drop the run's previous edges.
DELETE FROM relationships WHERE run_id = :run_id

-- insert_relationship --
-- Store one edge.
INSERT INTO relationships (run_id, source_id, target_id, kind, score)
VALUES (:run_id, :source_id, :target_id, :kind, :score)
ON CONFLICT DO NOTHING

-- relationships --
-- The run's edges.
SELECT source_id, target_id, kind, score FROM relationships WHERE run_id = :run_id
ORDER BY kind, source_id, score DESC

-- finished_documents --
-- Done documents with their link targets.
SELECT id, source, doc_key, uri, links FROM documents WHERE run_id = :run_id AND state = 'done'

-- chunk_vectors_of_run --
-- Every chunk vector of the run's finished documents, grouped by document.
SELECT c.document_id, c.embedding FROM chunks c JOIN documents d ON d.id = c.document_id
WHERE d.run_id = :run_id AND d.state = 'done' ORDER BY c.document_id

-- all_vectors --
-- Every chunk vector, for brute-force cosine search in numpy.
SELECT c.id, c.embedding FROM chunks c JOIN documents d ON d.id = c.document_id {run_filter}

-- hits_by_id --
-- Chunk details for search results.
SELECT c.id, c.document_id, d.uri, d.title, c.heading_path, c.page, c.ordinal, c.char_start, c.char_end,
       c.text
FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id IN ({ids})

-- text_search --
-- Full-text search ranked by BM25 (lower is better in FTS5, so it is negated).
SELECT f.rowid, -bm25(chunks_fts) AS score
FROM chunks_fts f JOIN chunks c ON c.id = f.rowid JOIN documents d ON d.id = c.document_id
WHERE chunks_fts MATCH ? {run_filter}
ORDER BY bm25(chunks_fts) LIMIT ?

-- documents --
-- One row per document.
SELECT id, run_id, source, doc_key, uri, state, attempts, chunk_count, title, last_error, error_class,
       updated_at
FROM documents {where} ORDER BY id {limit}

-- chunk_count --
-- Chunks of a run.
SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.run_id = :run_id

-- worker_rows --
-- Workers of a run with the age of their last heartbeat.
SELECT worker_id, run_id, host, pid, started_at, last_beat_at, stopped_at, current_docs, processed, failed,
       now() - last_beat_at, coalesce(pid_ns, '')
FROM workers WHERE run_id = :run_id ORDER BY started_at DESC

-- recent_durations --
-- Durations of attempts that finished well in a recent window.
SELECT finished_at - claimed_at FROM attempts
WHERE run_id = :run_id AND outcome IN ('done', 'unchanged') AND finished_at >= now() - :window

-- ==== Operations: events (trace), dead letters, claims, alerts, housekeeping ====================
-- Events are written with INSERT … SELECT in the transaction of the change they describe; detail
-- is a JSON object. Lists of ids or tokens travel as one JSON array parameter (json_each).

-- discovery_events --
-- New and changed documents of one upsert batch (:keys is [[key, kind], …]); the leader is the runs row's.
-- CROSS JOIN keeps the keys as the outer loop (SQLite does not reorder it), so each key is one
-- lookup in the unique (run_id, source, doc_key) index: the other order is keys × documents.
INSERT INTO events (run_id, document_id, at, kind, worker_id, detail)
SELECT d.run_id, d.id, now(), json_extract(j.value, '$[1]'), r.leader_id,
       json_object('uri', d.uri, 'version', d.version, 'size', d.size_bytes, 'state', d.state)
FROM json_each(:keys) AS j
CROSS JOIN documents d ON d.run_id = :run_id AND d.source = :source AND d.doc_key = json_extract(j.value, '$[0]')
JOIN runs r ON r.run_id = d.run_id

-- removed_events --
-- Documents a finished discovery pass did not see, just before they are deleted.
INSERT INTO events (run_id, document_id, at, kind, worker_id, detail)
SELECT d.run_id, d.id, now(), 'removed', r.leader_id,
       json_object('uri', d.uri, 'reason', 'no longer in source ' || d.source)
FROM documents d JOIN runs r ON r.run_id = d.run_id
WHERE d.run_id = :run_id AND d.source = :source AND d.seen_gen < :generation

-- lost_events --
-- Open attempts of documents (:ids, a JSON array) that are being taken over: their worker was lost.
INSERT INTO events (run_id, document_id, at, kind, worker_id, detail)
SELECT run_id, document_id, now(), 'lost', worker_id,
       json_object('attempt', attempt, 'message', 'lease expired before the worker finished')
FROM attempts WHERE document_id IN (SELECT value FROM json_each(:ids)) AND outcome IS NULL

-- buried_events --
-- Documents (:ids) just dead-lettered because their lease lapsed with every attempt used.
INSERT INTO events (run_id, document_id, at, kind, worker_id, detail)
SELECT run_id, id, now(), 'dead', NULL, json_object('error_class', error_class, 'message', last_error)
FROM documents WHERE id IN (SELECT value FROM json_each(:ids))

-- claim_events --
-- Documents (:ids) just claimed, with the worker and the lease expiry.
INSERT INTO events (run_id, document_id, at, kind, worker_id, detail)
SELECT run_id, id, now(), 'claimed', claimed_by,
       json_object('attempt', attempts, 'lease_expires_at', lease_expires_at)
FROM documents WHERE id IN (SELECT value FROM json_each(:ids))

-- attempt_events --
-- The outcome of claims (:tokens, a JSON array of lease tokens); :detail is a JSON object.
INSERT INTO events (run_id, document_id, at, kind, worker_id, detail)
SELECT a.run_id, a.document_id, now(), :kind, a.worker_id,
       json_set(:detail, '$.attempt', a.attempt, '$.state', d.state)
FROM attempts a JOIN documents d ON d.id = a.document_id
WHERE a.lease_token IN (SELECT value FROM json_each(:tokens))

-- schema_version --
-- The store's schema version.
SELECT max(version) FROM schema_version

-- record_schema_version --
-- Note that the tables of a newer version were created.
INSERT INTO schema_version (version) VALUES (:version)

-- failure_counts --
-- Dead documents of a run by error class.
SELECT coalesce(error_class, 'unknown'), count(*) FROM documents
WHERE run_id = :run_id AND state = 'dead' GROUP BY 1 ORDER BY 2 DESC, 1

-- claims --
-- Documents held now, with when their current attempt began; lapsed leases first, then by expiry.
SELECT d.id, d.run_id, d.uri, d.claimed_by, d.attempts, a.claimed_at, d.lease_expires_at,
       now() - coalesce(a.claimed_at, d.updated_at), d.lease_expires_at < now()
FROM documents d LEFT JOIN attempts a ON a.lease_token = d.lease_token
WHERE d.run_id = :run_id AND d.state = 'claimed'
ORDER BY d.lease_expires_at, d.id
LIMIT coalesce(:limit, -1)

-- recent_errors --
-- The run's latest attempts that ended badly in the last hour.
SELECT a.document_id, d.uri, a.worker_id, a.finished_at, a.outcome, a.error_class, a.error_message
FROM attempts a JOIN documents d ON d.id = a.document_id
WHERE a.run_id = :run_id AND a.outcome IN ('retry', 'dead', 'lost', 'fenced')
  AND a.finished_at >= now() - 3600
ORDER BY a.finished_at DESC LIMIT :limit

-- find_documents --
-- Documents of a run named by id, URI or key (:idents, a JSON array of strings).
SELECT id FROM documents
WHERE run_id = :run_id AND (CAST(id AS TEXT) IN (SELECT value FROM json_each(:idents))
                            OR uri IN (SELECT value FROM json_each(:idents))
                            OR doc_key IN (SELECT value FROM json_each(:idents)))
ORDER BY id

-- find_removed_documents --
-- Documents that no longer exist, named by the URI their events recorded.
SELECT DISTINCT document_id FROM events
WHERE run_id = :run_id AND kind IN ('discovered', 'removed', 'purged')
  AND json_extract(detail, '$.uri') IN (SELECT value FROM json_each(:idents))
ORDER BY document_id

-- document_rows --
-- Documents by id (:ids, a JSON array).
SELECT id, run_id, source, doc_key, uri, state, attempts, chunk_count, title, last_error, error_class,
       updated_at
FROM documents WHERE id IN (SELECT value FROM json_each(:ids)) ORDER BY id

-- events --
-- One document's history.
SELECT id, run_id, document_id, at, kind, worker_id, detail FROM events
WHERE document_id = :document_id ORDER BY id

-- relationship_count --
-- Edges from or to one document.
SELECT count(*) FROM relationships WHERE source_id = :id OR target_id = :id

-- requeue_events --
-- Operator retry (:ids): what each document was before it went back to pending.
INSERT INTO events (run_id, document_id, at, kind, worker_id, detail)
SELECT run_id, id, now(), 'requeued', NULL,
       json_object('previous_state', state, 'attempts', attempts, 'last_error', last_error)
FROM documents
WHERE run_id = :run_id AND id IN (SELECT value FROM json_each(:ids)) AND state IN ('dead', 'pending')

-- requeue --
-- Dead or waiting documents (:ids) back to pending now, attempts reset; last_error stays until done.
UPDATE documents SET state = 'pending', attempts = 0, available_at = now(), updated_at = now()
WHERE run_id = :run_id AND id IN (SELECT value FROM json_each(:ids)) AND state IN ('dead', 'pending')
RETURNING id

-- purge_events --
-- Dead documents about to be purged.
INSERT INTO events (run_id, document_id, at, kind, worker_id, detail)
SELECT run_id, id, now(), 'purged', NULL,
       json_object('uri', uri, 'error_class', error_class, 'message', last_error)
FROM documents
WHERE state = 'dead' AND updated_at < now() - :age AND (:run_id IS NULL OR run_id = :run_id)

-- purge_dead --
-- Delete dead documents older than :age seconds; chunks, attempts and edges go with them.
DELETE FROM documents
WHERE state = 'dead' AND updated_at < now() - :age AND (:run_id IS NULL OR run_id = :run_id)

-- stuck_claims --
-- Lease tokens of claims whose current attempt began at least :age seconds ago.
SELECT d.lease_token FROM documents d JOIN attempts a ON a.lease_token = d.lease_token
WHERE d.run_id = :run_id AND d.state = 'claimed' AND a.claimed_at <= now() - :age

-- reset_claims --
-- Release claims (:tokens) without spending an attempt; the holder's late completion is fenced.
UPDATE documents
SET state = 'pending', attempts = max(attempts - 1, 0), available_at = now(), lease_token = NULL,
    claimed_by = NULL, lease_expires_at = NULL, updated_at = now()
WHERE lease_token IN (SELECT value FROM json_each(:tokens)) AND state = 'claimed'

-- close_reset_attempts --
-- Close the attempts of reset claims.
UPDATE attempts SET outcome = 'released', finished_at = now(), error_class = 'ClaimReset',
    error_message = :reason
WHERE lease_token IN (SELECT value FROM json_each(:tokens))

-- get_alert_state --
-- The dead count the previous alert check saw.
SELECT dead_count FROM alert_state WHERE run_id = :run_id

-- put_alert_state --
-- Remember this alert check's dead count.
INSERT INTO alert_state (run_id, dead_count, checked_at) VALUES (:run_id, :dead_count, now())
ON CONFLICT (run_id) DO UPDATE SET dead_count = excluded.dead_count, checked_at = excluded.checked_at

-- prune_events --
-- Events of one run older than the retention.
DELETE FROM events WHERE run_id = :run_id AND at < now() - :age

-- event_runs --
-- Runs that have events (to prune run by run through the (run_id, at) index).
SELECT run_id FROM runs

-- finished_runs --
-- Runs complete for longer than :age seconds.
SELECT run_id FROM runs WHERE state = 'complete' AND updated_at < now() - :age

-- cleanup_attempts --
-- Attempts history of one finished run.
DELETE FROM attempts WHERE run_id = :run_id

-- cleanup_events --
-- Events of one finished run.
DELETE FROM events WHERE run_id = :run_id

-- cleanup_workers --
-- Worker rows of one finished run.
DELETE FROM workers WHERE run_id = :run_id
