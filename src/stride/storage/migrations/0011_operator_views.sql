-- What the operator's views read: each job's failed attempts (`stride jobs
-- show`) and which worker processes are alive (`stride workers`).

-- The last few failed attempts of a job, oldest first: {"attempt", "at",
-- "error", "outcome", "worker"} per entry. Only the failure paths of the queue
-- write it (a retry, a give-up, a reclaimed lease), so a job that never fails
-- keeps it NULL and costs nothing; adding a nullable column without a default
-- does not rewrite the table.
ALTER TABLE background_jobs ADD COLUMN error_history jsonb;

-- One row per worker process, upserted by its lease keeper every beat (a third
-- of its lease) and deleted when it stops cleanly. A row whose heartbeat is
-- older than its lease belongs to a worker that died or hung.
CREATE TABLE worker_heartbeats (
    worker_id      text PRIMARY KEY,
    host           text NOT NULL,
    pid            integer NOT NULL,
    concurrency    integer NOT NULL,
    job_types      text[],           -- NULL: every job type
    lease_seconds  double precision NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Appends one entry to a job's error history, keeping the last 10: the one
-- place that bounds it. Every failure path of the queue calls it in the same
-- UPDATE that records the failure; plain SQL, so the planner inlines it.
CREATE FUNCTION stride_append_error(history jsonb, entry jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_array_length(coalesce(history, '[]'::jsonb)) >= 10
                THEN history - 0
                ELSE coalesce(history, '[]'::jsonb)
           END || jsonb_build_array(entry)
$$;
