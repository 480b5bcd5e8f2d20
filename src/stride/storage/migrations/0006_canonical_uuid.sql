-- What names a retracted event, for SQL: the same rule as
-- stride.domain.events.retraction_target, spelled with the same pattern
-- (stride.domain.events.UUID_TEXT_PATTERN; a property test runs both on the
-- same random strings). `retracted_event_id` must be a JSON string holding 32
-- hex digits of either case, a hyphen allowed after any group of four,
-- optionally inside one pair of braces, optionally after `urn:uuid:`, with
-- ASCII whitespace around it. Anything else names nothing (NULL), never an error.
--
-- A plain SQL expression, IMMUTABLE and without exception handling, so the
-- planner can inline it into the queries that load events.
CREATE FUNCTION stride_retraction_target(data jsonb) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN jsonb_typeof(data -> 'retracted_event_id') = 'string'
         AND (data ->> 'retracted_event_id')
             ~ '^[ \t\n\r\f\v]*(urn:uuid:)?(\{[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7}\}|[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7})[ \t\n\r\f\v]*$'
        THEN substring(data ->> 'retracted_event_id' FROM '[0-9A-Fa-f]{4}(?:-?[0-9A-Fa-f]{4}){7}')::uuid
    END
$$;
