-- The backfill controller runs its fan-out as short steps, one chunk of the
-- snapshot per run of its job (stride.backfill.fanout), so it never holds a
-- runner for long. Two more facts per run:
-- next_due_at   with --max-rate, when the next chunk's first user is due: each
--               chunk's jobs are scheduled one 1/max_rate apart from there, so
--               the rate caps the projection work itself, not only the enqueueing;
-- cancelled_at  when `stride backfill cancel` stopped the run (cancel_requested
--               says whether; this says when, for `stride backfill history`).
ALTER TABLE backfill_runs
    ADD COLUMN next_due_at timestamptz,
    ADD COLUMN cancelled_at timestamptz;
