-- Queue upkeep: background_jobs churns (every job is inserted, claimed and
-- completed, each an UPDATE leaving a dead tuple), so vacuum it early rather
-- than at the default 20% of the table. Until vacuum runs, claimed rows leave
-- dead entries at the head of background_jobs_claim that every claim has to
-- step over.
ALTER TABLE background_jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);

-- `stride jobs status` shows the latest dead jobs; dead rows are few, so this
-- partial index stays tiny and costs nothing on the hot path.
CREATE INDEX background_jobs_dead ON background_jobs (completed_at DESC, id DESC)
    WHERE status = 'dead';
