-- The runbook's progress queries find a backfill's jobs by `payload->>'source'`
-- (verbatim: `job_type = '…' AND payload->>'source' = '<your-source>'`). The
-- btree of 0001 over (job_type, source, status) failed on the btree row-size
-- limit (about 2.7 kB) for a long enough source: a job could be inserted while
-- pending and then every claim that included it failed, which blocked the queue.
--
-- An SP-GiST radix tree over the source text serves the same equality
-- predicate and has no row-size limit: long values are split across the tree
-- (its text opclass takes values of any length). A hash index would serve
-- equality too, but it appends every duplicate of one value to a single bucket
-- chain that each insert walks: measured on 150,000 jobs of one source, each
-- status change of them all took 16-18 times as long as with the btree, where
-- this index costs about what the btree did. Only jobs with a source are indexed: the equality
-- predicate implies IS NOT NULL, and organic jobs (no source) stay out of it.
DROP INDEX background_jobs_type_source_status;

CREATE INDEX background_jobs_source
    ON background_jobs USING spgist ((payload ->> 'source'))
    WHERE (payload ->> 'source') IS NOT NULL;
