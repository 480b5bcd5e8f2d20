-- Backfill bookkeeping: the user snapshot taken at trigger time, and the
-- controller's checkpoint.

-- One row per snapshotted user, numbered so the controller can walk the
-- snapshot in chunks by range and resume from a position. Keeping millions of
-- ids here instead of in one JSON array inside the job payload means no query
-- ever re-parses a giant document.
CREATE TABLE backfill_snapshot_users (
    snapshot_id uuid NOT NULL,
    position    bigint NOT NULL,
    user_id     uuid NOT NULL,
    PRIMARY KEY (snapshot_id, position)
);

CREATE INDEX backfill_snapshot_users_user ON backfill_snapshot_users (snapshot_id, user_id);

-- One row per backfill run (per controller job): where the fan-out stands.
CREATE TABLE backfill_runs (
    job_id           bigint PRIMARY KEY,
    source           text NOT NULL,
    snapshot_id      uuid NOT NULL,
    users_total      bigint NOT NULL,
    next_position    bigint NOT NULL DEFAULT 1,
    jobs_enqueued    bigint NOT NULL DEFAULT 0,
    max_rate         double precision,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    fanout_done_at   timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX backfill_runs_source ON backfill_runs (source, created_at DESC);
