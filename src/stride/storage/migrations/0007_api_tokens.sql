-- The HTTP API (`stride serve`): bearer tokens, and the index its
-- read-your-write wait needs.

-- A token is `stride_<id>_<secret>`. Only the SHA-256 of the secret is kept;
-- `id` is the public part, so a presented token is found by primary key and its
-- secret compared with the stored digest in constant time (in Python).
CREATE TABLE api_tokens (
    id             text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    secret_sha256  bytea NOT NULL CHECK (octet_length(secret_sha256) = 32),
    user_id        uuid NOT NULL REFERENCES users (id),
    operator       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    revoked_at     timestamptz
);

CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- `GET …?after_event=<id>` waits until the event's own projection.update job
-- (the trigger of 0002 puts `event_id` in its payload) is completed, so it
-- looks that job up by event id. Partial: backfill fan-out jobs carry
-- payload.source and never enter this index, so the backfill's job inserts and
-- their claim/complete updates do not pay for it; organic jobs do, once per
-- insert and per status change.
CREATE INDEX background_jobs_organic_event
    ON background_jobs ((payload ->> 'event_id'))
    WHERE job_type = 'projection.update' AND NOT (payload ? 'source');
