-- Progress and completeness of one backfill run (stride's own, beyond the runbook's four).

-- name: latest_run
SELECT r.job_id, r.source, r.snapshot_id, r.users_total, r.next_position, r.jobs_enqueued,
       r.max_rate, r.cancel_requested, r.created_at, r.fanout_done_at, j.status
FROM backfill_runs r
JOIN background_jobs j ON j.id = r.job_id
WHERE r.source = %(source)s
ORDER BY r.created_at DESC, r.job_id DESC
LIMIT 1

-- name: snapshot_coverage
-- Snapshotted users with both objective surfaces: at all, and written since the trigger.
SELECT
    count(*) FILTER (WHERE st.user_id IS NOT NULL AND adv.user_id IS NOT NULL) AS with_both,
    count(*) FILTER (
        WHERE st.updated_at >= %(since)s AND adv.updated_at >= %(since)s
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

-- name: missing_users_sample
-- A few snapshotted users still lacking a surface, for the operator to inspect.
SELECT s.user_id
FROM backfill_snapshot_users s
WHERE s.snapshot_id = %(snapshot_id)s
  AND (
      NOT EXISTS (SELECT 1 FROM projections p WHERE p.user_id = s.user_id
                  AND p.projection_type = 'objective_state' AND p.key = 'active')
   OR NOT EXISTS (SELECT 1 FROM projections p WHERE p.user_id = s.user_id
                  AND p.projection_type = 'objective_advisory' AND p.key = 'overview')
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
-- Fan-out jobs of one source by status (same rows as the runbook's query, for the live bar).
SELECT status, count(*)
FROM background_jobs
WHERE job_type = 'projection.update' AND payload ->> 'source' = %(source)s
GROUP BY status

-- name: dead_jobs_sample
-- Fan-out jobs of one source that ended without success (dead or failed).
SELECT id, job_type, payload ->> 'user_id', error_message
FROM background_jobs
WHERE payload ->> 'source' = %(source)s AND status IN ('dead', 'failed')
ORDER BY id
LIMIT %(limit)s
