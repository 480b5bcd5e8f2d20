-- The operator dashboard (`stride serve` at /admin): sign-in sessions, and the
-- index its user page needs on a large database.

-- One row per signed-in browser. The cookie holds a random session id; only
-- its SHA-256 is stored, so a leaked table cannot be replayed as cookies. The
-- session lives only as long as the operator token it was opened with:
-- revoking or expiring the token ends it (the lookup joins api_tokens), and
-- deleting the token deletes it. `csrf_token` is the synchronizer token every
-- form of the session posts back; `flash` is the one-shot message shown after
-- an action; `last_verification` the result of the session's latest
-- "verify a sample".
CREATE TABLE admin_sessions (
    id_sha256         bytea PRIMARY KEY CHECK (octet_length(id_sha256) = 32),
    token_id          text NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf_token        text NOT NULL CHECK (length(csrf_token) >= 32),
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    flash             text,
    last_verification jsonb
);

CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);
CREATE INDEX admin_sessions_token ON admin_sessions (token_id);

-- The user page lists a user's pending jobs. Partial on pending: a job enters
-- it once, when enqueued (a claim moves the row out of the predicate, so
-- claiming and completing add nothing here); the user's processing and
-- given-up jobs are found through the small partial indexes on those statuses
-- (background_jobs_lease, background_jobs_given_up).
CREATE INDEX background_jobs_user_pending ON background_jobs (user_id) WHERE status = 'pending';
