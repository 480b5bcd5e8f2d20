-- Ordered revisions of projection logic (safe deploys).
--
-- A read model's every output declares an integer revision that only grows
-- (stride.projections.registry.ReadModelOutput), beside its readable
-- model_version label. Each projection row records the revision that wrote it,
-- and the upsert (stride.storage.projection_store.UPSERT_PROJECTIONS) refuses
-- to replace a row of a higher revision, so a worker still running old code
-- during a rolling deploy can never overwrite what the new code wrote.
--
-- 0 means "written before revisions existed": every row already stored, and
-- any row a pre-revision worker still inserts during the deploy that brings
-- this migration. Revisions start at 1, so any running code replaces such a
-- row. NOT NULL with a constant default: the guard compares plain integers
-- (no NULL case to forget).
--
-- Takes an ACCESS EXCLUSIVE lock on projections, briefly: a constant default
-- is stored in the catalog, so no row is rewritten or scanned (which is also
-- why there is no CHECK constraint here: validating it would scan the table
-- under that lock).
ALTER TABLE projections ADD COLUMN revision integer NOT NULL DEFAULT 0;

-- The revision of every output the code that triggered a backfill run runs,
-- e.g. {"objective_state/active": 2, "objective_advisory/overview": 2}. The
-- run's fan-out jobs carry it, and a worker running older revisions defers
-- them to a newer worker instead of writing old logic; `backfill history` can
-- show it. (ACCESS EXCLUSIVE on a small table, catalog-only change.)
ALTER TABLE backfill_runs ADD COLUMN revisions jsonb;

-- The results of `stride backfill preview` (what a deploy would change), kept
-- so they can be looked at later (e.g. by the dashboard). Small documents, one
-- per preview run.
CREATE TABLE backfill_previews (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    scope        text NOT NULL CHECK (scope IN ('sample', 'all')),
    users_seen   bigint NOT NULL,
    revisions    jsonb NOT NULL,
    result       jsonb NOT NULL
);

CREATE INDEX backfill_previews_created ON backfill_previews (created_at DESC, id DESC);
