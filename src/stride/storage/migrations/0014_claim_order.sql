-- The ids a claim takes, in claim order, whatever the planner's statistics say.
--
-- Due pending jobs, highest priority first, then oldest due, then id; locked
-- FOR UPDATE, skipping rows another claimer holds. The claim index
-- (background_jobs_claim) is exactly this order, so walking it and stopping
-- after $1 rows is always the right plan. Left to choose, the planner trusted
-- statistics taken before a fan-out filled the queue (46 pending jobs estimated,
-- 13,600 there) and read every pending job through a bitmap scan and sorted
-- them, on every claim: 18 of a claim's 27 ms at 10,000 users, growing with the
-- backlog. A function only to carry `SET enable_sort = off`, for its own query
-- and nothing else; its plan is generic (parameters unknown), which that
-- setting makes harmless.
--
-- $1: how many ids at most; $2: the job types to claim, NULL for any.
CREATE FUNCTION stride_claimable_jobs(integer, text[]) RETURNS SETOF bigint
LANGUAGE sql VOLATILE
SET enable_sort = off
AS $$
    SELECT id FROM background_jobs
    WHERE status = 'pending' AND scheduled_for <= now()
      AND ($2 IS NULL OR job_type = ANY($2))
    ORDER BY priority DESC, scheduled_for, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
$$;
