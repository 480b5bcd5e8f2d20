-- Events are append-only, and every inserted event enqueues a projection.update job.

CREATE FUNCTION stride_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % is not allowed (retract with an event.retracted event instead)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION stride_events_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION stride_events_append_only();

-- Statement-level with a transition table: one INSERT ... SELECT per statement
-- rather than one per row, and one NOTIFY. pg_notify with a constant payload
-- collapses to a single notification per transaction, so writers do not
-- serialise on the notify queue lock with one payload per row.
-- A bulk loader (demo seed) may set stride.enqueue_projection_updates = 'off'
-- for its own transaction to load history without queueing work.
CREATE FUNCTION stride_events_enqueue_projection_updates() RETURNS trigger
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
    PERFORM pg_notify('stride_jobs', 'projection.update');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_enqueue_projection_updates
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION stride_events_enqueue_projection_updates();
