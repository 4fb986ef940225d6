-- 004: finalize skips recomputing relationships when the run's done documents did not change.

-- What the last finalize computed relationships from (a fingerprint of the run's done documents),
-- so a finalize after a re-run that changed nothing keeps the edges instead of recomputing them.
CREATE TABLE IF NOT EXISTS finalized_inputs (
    run_id       text PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    fingerprint  text NOT NULL
);
