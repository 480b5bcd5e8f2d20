-- One notification channel, named in one SQL place: every "jobs are due"
-- notification, from Python (stride.queue.jobs) or from triggers, goes through
-- stride_notify_jobs(). The channel must equal stride.queue.jobs.NOTIFY_CHANNEL,
-- which workers LISTEN on; an integration test listens there for a notification
-- sent by the events trigger below.
CREATE FUNCTION stride_notify_jobs(job_type text) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_notify('stride_jobs', job_type)
$$;

-- As in 0002, with the notification sent through stride_notify_jobs().
CREATE OR REPLACE FUNCTION stride_events_enqueue_projection_updates() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('stride.enqueue_projection_updates', true), 'on') = 'off' THEN
        RETURN NULL;
    END IF;
    INSERT INTO background_jobs (job_type, payload, user_id)
    SELECT 'projection.update',
           jsonb_build_object(
               'event_id', n.id::text,
               'event_type', n.event_type,
               'user_id', n.user_id::text
           ),
           n.user_id
    FROM new_events n;
    PERFORM stride_notify_jobs('projection.update');
    RETURN NULL;
END
$$;

-- Jobs end without success as `dead` (attempts exhausted, no handler) or
-- `failed` (the handler declared them hopeless). `stride jobs status` lists the
-- latest of both; they are few, so this partial index stays tiny.
DROP INDEX background_jobs_dead;
CREATE INDEX background_jobs_given_up ON background_jobs (completed_at DESC, id DESC)
    WHERE status IN ('dead', 'failed');
