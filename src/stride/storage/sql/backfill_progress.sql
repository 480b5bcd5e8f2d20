-- Progress and completeness of one backfill run (stride's own, beyond the runbook's four).
-- A run is one controller job; its fan-out jobs carry its id as payload.backfill_job_id.

-- name: latest_run
-- The latest run of a source, and how many runs the source label has had.
SELECT r.job_id, r.snapshot_id, r.users_total, r.next_position, r.jobs_enqueued,
       r.max_rate, r.cancel_requested, r.cancelled_at, r.created_at, r.fanout_done_at,
       c.status AS controller_status,
       count(*) OVER () AS runs_of_source,
       clock_timestamp() AS observed_at
FROM backfill_runs r
LEFT JOIN background_jobs c ON c.id = r.job_id
WHERE r.source = %(source)s
ORDER BY r.created_at DESC, r.job_id DESC
LIMIT 1

-- name: snapshot_coverage
-- The run's snapshotted users: with both objective surfaces at all; refreshed by
-- this run (both written since its trigger by the current model versions); not
-- on the current model versions.
SELECT
    count(*) FILTER (WHERE st.user_id IS NOT NULL AND adv.user_id IS NOT NULL) AS with_both,
    count(*) FILTER (
        WHERE st.updated_at >= %(since)s AND adv.updated_at >= %(since)s
          AND st.model_version = %(state_model)s AND adv.model_version = %(advisory_model)s
    ) AS refreshed_since_trigger,
    count(*) FILTER (
        WHERE st.model_version IS DISTINCT FROM %(state_model)s
           OR adv.model_version IS DISTINCT FROM %(advisory_model)s
    ) AS not_on_current_model
FROM backfill_snapshot_users s
LEFT JOIN projections st
       ON st.user_id = s.user_id AND st.projection_type = 'objective_state' AND st.key = 'active'
LEFT JOIN projections adv
       ON adv.user_id = s.user_id AND adv.projection_type = 'objective_advisory'
      AND adv.key = 'overview'
WHERE s.snapshot_id = %(snapshot_id)s

-- name: not_refreshed_sample
-- A few snapshotted users this run has not refreshed yet (the same test as
-- refreshed_since_trigger, negated), for the operator to inspect.
SELECT s.user_id
FROM backfill_snapshot_users s
WHERE s.snapshot_id = %(snapshot_id)s
  AND NOT EXISTS (
      SELECT 1
      FROM projections st
      JOIN projections adv
        ON adv.user_id = st.user_id AND adv.projection_type = 'objective_advisory'
       AND adv.key = 'overview'
      WHERE st.user_id = s.user_id AND st.projection_type = 'objective_state'
        AND st.key = 'active'
        AND st.updated_at >= %(since)s AND adv.updated_at >= %(since)s
        AND st.model_version = %(state_model)s AND adv.model_version = %(advisory_model)s
  )
ORDER BY s.position
LIMIT %(limit)s

-- name: users_on_old_model
-- All users (not only the snapshot) whose objective projections predate the running model.
SELECT count(DISTINCT user_id)
FROM projections
WHERE (projection_type = 'objective_state' AND key = 'active'
       AND model_version IS DISTINCT FROM %(state_model)s)
   OR (projection_type = 'objective_advisory' AND key = 'overview'
       AND model_version IS DISTINCT FROM %(advisory_model)s)

-- name: source_job_counts
-- Fan-out jobs of a source by status, split by whether they already failed once
-- (a pending one of those waits for its retry), with the latest settle time.
-- Used when the source has had one run only: the same rows as run_job_counts,
-- read from the (job_type, source, status) index alone.
SELECT status, attempt > 0 AS retried, count(*), max(completed_at)
FROM background_jobs
WHERE job_type = 'projection.update' AND payload ->> 'source' = %(source)s
GROUP BY status, attempt > 0

-- name: run_job_counts
-- As source_job_counts, for the fan-out jobs of one run of a reused source.
SELECT status, attempt > 0 AS retried, count(*), max(completed_at)
FROM background_jobs
WHERE job_type = 'projection.update' AND payload ->> 'source' = %(source)s
  AND payload ->> 'backfill_job_id' = %(job_id)s::text
GROUP BY status, attempt > 0

-- name: dead_jobs_sample
-- Fan-out jobs of one run that ended without success (dead or failed).
SELECT id, job_type, payload ->> 'user_id', error_message
FROM background_jobs
WHERE job_type = 'projection.update' AND payload ->> 'source' = %(source)s
  AND payload ->> 'backfill_job_id' = %(job_id)s::text
  AND status IN ('dead', 'failed')
ORDER BY id
LIMIT %(limit)s

-- name: run_history
-- Every run (of one source, or of all), newest first: its controller, its
-- fan-out jobs by state, and its users refreshed since its trigger (by any
-- model version: a run is judged by the code of its time), and the revisions
-- of the code that triggered it (NULL for runs from before revisions).
SELECT r.job_id, r.source, r.created_at, r.users_total, r.jobs_enqueued,
       r.cancel_requested, r.cancelled_at, c.status AS controller_status,
       jobs.open, jobs.given_up, jobs.last_settled_at,
       refreshed.users AS users_refreshed,
       clock_timestamp() AS observed_at,
       r.revisions
FROM backfill_runs r
LEFT JOIN background_jobs c ON c.id = r.job_id
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE f.status IN ('pending', 'processing')) AS open,
           count(*) FILTER (WHERE f.status IN ('dead', 'failed')) AS given_up,
           max(f.completed_at) AS last_settled_at
    FROM background_jobs f
    WHERE f.job_type = 'projection.update' AND f.payload ->> 'source' = r.source
      AND f.payload ->> 'backfill_job_id' = r.job_id::text
) jobs
CROSS JOIN LATERAL (
    SELECT count(*) AS users
    FROM backfill_snapshot_users s
    JOIN projections st
      ON st.user_id = s.user_id AND st.projection_type = 'objective_state'
     AND st.key = 'active' AND st.updated_at >= r.created_at
    JOIN projections adv
      ON adv.user_id = s.user_id AND adv.projection_type = 'objective_advisory'
     AND adv.key = 'overview' AND adv.updated_at >= r.created_at
    WHERE s.snapshot_id = r.snapshot_id
) refreshed
WHERE %(source)s::text IS NULL OR r.source = %(source)s::text
ORDER BY r.created_at DESC, r.job_id DESC
LIMIT %(limit)s

