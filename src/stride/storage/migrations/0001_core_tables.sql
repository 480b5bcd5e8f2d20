-- Core tables of spec §2: users, events, projections, background_jobs.
-- Names and columns the runbook reads are fixed; everything else is ours.

-- Time-ordered UUID (version 7) generated in SQL, so the server can mint ids
-- on PostgreSQL 15 (which has no uuidv7()). 48-bit Unix milliseconds, then
-- random bits; version and variant bits set per RFC 9562.
CREATE OR REPLACE FUNCTION stride_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(
            set_bit(
                overlay(
                    uuid_send(gen_random_uuid())
                    PLACING substring(
                        int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                        FROM 3
                    )
                    FROM 1 FOR 6
                ),
                52, 1
            ),
            53, 1
        ),
        'hex'
    )::uuid
$$;

CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT stride_uuid_v7(),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id          uuid PRIMARY KEY DEFAULT stride_uuid_v7(),
    user_id     uuid NOT NULL REFERENCES users (id),
    event_type  text NOT NULL CHECK (btrim(event_type) <> ''),
    "timestamp" timestamptz NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(data) = 'object'),
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A re-sent event (same user, same idempotency key) is a no-op.
CREATE UNIQUE INDEX events_user_idempotency_key
    ON events (user_id, (metadata ->> 'idempotency_key'))
    WHERE metadata ? 'idempotency_key';

-- Per-user history in fold order, and latest event per (user, type) for fan-out.
CREATE INDEX events_user_type_order ON events (user_id, event_type, "timestamp", id);

CREATE TABLE projections (
    user_id         uuid NOT NULL REFERENCES users (id),
    projection_type text NOT NULL,
    key             text NOT NULL,
    data            jsonb NOT NULL,
    version         bigint NOT NULL DEFAULT 1,
    model_version   text,
    last_event_id   uuid,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, projection_type, key)
);

CREATE INDEX projections_type_key ON projections (projection_type, key, user_id);

CREATE TABLE background_jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_type        text NOT NULL CHECK (btrim(job_type) <> ''),
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'dead', 'cancelled')),
    user_id         uuid,
    priority        integer NOT NULL DEFAULT 0,
    attempt         integer NOT NULL DEFAULT 0,
    max_retries     integer NOT NULL DEFAULT 5 CHECK (max_retries >= 0),
    error_message   text,
    dedup_key       text,
    locked_by       text,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz,
    scheduled_for   timestamptz NOT NULL DEFAULT now()
);

-- Claim order: highest priority, then oldest due, then id; only pending rows.
CREATE INDEX background_jobs_claim
    ON background_jobs (priority DESC, scheduled_for, id)
    WHERE status = 'pending';

-- At most one pending-or-processing job per dedup key. Enforced by the index,
-- so two concurrent enqueuers can never both insert (no check-then-insert race).
CREATE UNIQUE INDEX background_jobs_dedup_in_flight
    ON background_jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'processing');

-- Lease reclaim scans only processing rows by expiry.
CREATE INDEX background_jobs_lease ON background_jobs (locked_until) WHERE status = 'processing';

-- Runbook progress queries: job_type + payload source, grouped by status.
CREATE INDEX background_jobs_type_source_status
    ON background_jobs (job_type, (payload ->> 'source'), status);

-- Pruning completed jobs by age.
CREATE INDEX background_jobs_completed_at ON background_jobs (completed_at) WHERE status = 'completed';
