"""Loading users' events and writing projections, many users per round trip."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import orjson
from psycopg.abc import Buffer
from psycopg.types.json import JsonbBinaryLoader

from stride.domain.events import RETRACTION_EVENT_TYPE, Event
from stride.domain.validation import MAX_TIMESTAMP, MIN_TIMESTAMP
from stride.storage.connection import AsyncDbConnection, DbConnection

# Events of the given types for a set of users, unordered: the folds order
# events themselves, and sorting here spills to disk for large batches.
#
# Types in %(daily)s are folds' bulk (set.logged) and the folds read only their
# UTC day and latest timestamp, so they arrive collapsed to the latest event per
# (user, type, UTC day), without data: a tenth of the rows for a heavy lifter,
# and the fold output is the same (a property test holds the folds to that).
# The collapse keeps an event when the next one of its (user, type) in
# (timestamp, id) order falls on another UTC day (or there is none): the day
# only grows with the timestamp, so that is the day's latest. The window reads
# the rows in the order of the index events_user_type_order, so the planner
# needs no sort; a DISTINCT ON (user, type, day) form sorted every row of a
# heavy lifter's history by a text key, most of the statement's time.
#
# Retractions: which events are retracted is decided once, in Python
# (stride.domain.events.retracted_event_ids: a retracted retraction stops
# retracting), so every load brings the users' event.retracted along. Here, an
# event of a daily type that a retraction of the same user names
# (stride_retraction_target, migration 0006) is kept out of the collapse and
# sent on its own: whether or not it ends up retracted, it can never hide, nor
# be hidden behind, the day's other events.
#
# A timestamp outside what validation admits today (rows stored before it did)
# comes back NULL rather than failing the whole batch in the driver; such an
# event is handed on as unreadable (see load_events_for_users).
LOAD_EVENTS = """
WITH named AS (
    SELECT r.user_id, stride_retraction_target(r.data) AS event_id
    FROM events r
    WHERE r.user_id = ANY(%(user_ids)s) AND r.event_type = 'event.retracted'
)
SELECT id, user_id, event_type,
       CASE WHEN "timestamp" BETWEEN %(min_ts)s AND %(max_ts)s THEN "timestamp" END, data
FROM events
WHERE user_id = ANY(%(user_ids)s)
  AND event_type = ANY(%(whole)s)
UNION ALL
SELECT id, user_id, event_type,
       CASE WHEN "timestamp" BETWEEN %(min_ts)s AND %(max_ts)s THEN "timestamp" END,
       NULL::jsonb
FROM (
    SELECT e.id, e.user_id, e.event_type, e."timestamp",
           lead((e."timestamp" AT TIME ZONE 'UTC')::date) OVER (
               PARTITION BY e.user_id, e.event_type ORDER BY e."timestamp", e.id
           ) AS next_day
    FROM events e
    WHERE e.user_id = ANY(%(user_ids)s)
      AND e.event_type = ANY(%(daily)s)
      AND NOT EXISTS (SELECT FROM named n WHERE n.user_id = e.user_id AND n.event_id = e.id)
) daily
WHERE next_day IS DISTINCT FROM ("timestamp" AT TIME ZONE 'UTC')::date
UNION ALL
SELECT e.id, e.user_id, e.event_type,
       CASE WHEN e."timestamp" BETWEEN %(min_ts)s AND %(max_ts)s THEN e."timestamp" END,
       NULL::jsonb
FROM (SELECT DISTINCT user_id, event_id FROM named WHERE event_id IS NOT NULL) n
JOIN events e ON e.id = n.event_id AND e.user_id = n.user_id
WHERE e.event_type = ANY(%(daily)s)
"""

# Delivered on commit of every transaction that wrote projections; `stride
# serve` listens on it to answer read-your-write requests without polling.
PROJECTIONS_CHANNEL = "stride_projections"

# One statement writes every projection of the batch. `version` counts writes,
# `updated_at` is the moment of this write. Arrays go in binary (%b): the text
# form would escape every quote of every JSON document.
#
# Revisions: a row is replaced only by a write of an equal or higher revision
# (migration 0012). The guard is the ON CONFLICT's WHERE, so it holds under
# concurrency: the conflicting row is locked and the condition evaluated
# against its latest committed version, never against a stale read. A refused
# row stays as it is (locked until commit, not updated) and is left out of
# RETURNING; the outer SELECT hands back what was written as three arrays, so
# the caller learns which rows were superseded without another round trip.
#
# The same statement announces the write: the outer SELECT aggregates to one
# row, so pg_notify runs once per statement (not per row, no extra round
# trip), and a constant payload collapses to one notification per transaction,
# delivered at commit together with the jobs' completion. It notifies even
# when every row was refused: the jobs still complete, and read-your-write
# waiters (`stride serve`) wake on this channel to see that. Notifying
# transactions serialise their commits on PostgreSQL's notify queue lock; the
# worker commits asynchronously (no WAL flush wait), so the lock is held only
# briefly.
UPSERT_PROJECTIONS = """
WITH written AS (
    INSERT INTO projections AS p
        (user_id, projection_type, key, data, version, model_version, revision,
         last_event_id, updated_at)
    SELECT w.user_id, w.projection_type, w.key, w.data::jsonb, 1, w.model_version, w.revision,
           w.last_event_id, clock_timestamp()
    FROM unnest(
        %(user_ids)b::uuid[], %(projection_types)b::text[], %(keys)b::text[],
        %(data)b::text[], %(model_versions)b::text[], %(revisions)b::int4[],
        %(last_event_ids)b::uuid[]
    ) AS w(user_id, projection_type, key, data, model_version, revision, last_event_id)
    ON CONFLICT (user_id, projection_type, key) DO UPDATE
    SET data = EXCLUDED.data,
        version = p.version + 1,
        model_version = EXCLUDED.model_version,
        revision = EXCLUDED.revision,
        last_event_id = EXCLUDED.last_event_id,
        updated_at = EXCLUDED.updated_at
    WHERE p.revision <= EXCLUDED.revision
    RETURNING p.user_id, p.projection_type, p.key
)
SELECT pg_notify('stride_projections', 'written'),
       count(*),
       array_agg(user_id), array_agg(projection_type), array_agg(key)
FROM written
"""

READ_PROJECTIONS = """
SELECT projection_type, key, data, version, model_version, last_event_id, updated_at, revision
FROM projections
WHERE user_id = %(user_id)s
  AND (%(projection_type)s::text IS NULL OR projection_type = %(projection_type)s)
ORDER BY projection_type, key
"""

READ_PROJECTION = """
SELECT projection_type, key, data, version, model_version, last_event_id, updated_at, revision
FROM projections
WHERE user_id = %(user_id)s AND projection_type = %(projection_type)s AND key = %(key)s
"""

# Read-your-write (`stride serve`): the statuses of an event's own
# projection.update jobs, for an event of this user. No row at all: the event is
# not this user's (or does not exist). One row with a NULL status: the event has
# no job row (pruned after it completed, or bulk-loaded without one). The job
# predicate repeats that of the partial index background_jobs_organic_event
# (migration 0007) word for word, so the planner can prove the index usable.
EVENT_JOB_STATUSES = """
SELECT j.status
FROM events e
LEFT JOIN background_jobs j
       ON j.job_type = 'projection.update' AND NOT (j.payload ? 'source')
      AND (j.payload ->> 'event_id') = e.id::text
WHERE e.id = %(event_id)s AND e.user_id = %(user_id)s
"""

# The same for many events at once: one query however many requests wait.
JOB_STATUSES_BY_EVENT = """
SELECT (j.payload ->> 'event_id')::uuid, j.status
FROM background_jobs j
WHERE j.job_type = 'projection.update' AND NOT (j.payload ? 'source')
  AND (j.payload ->> 'event_id') = ANY(%(event_ids)s::text[])
"""


# Stands in for the timestamp of an unreadable event; the folds never see it.
UNREADABLE_TIMESTAMP: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class UnreadableJson:
    """What the event loader yields for a jsonb value it cannot decode, and why."""

    reason: str


class _TolerantJsonbBinaryLoader(JsonbBinaryLoader):
    """jsonb for the event loader: a value that cannot be decoded (a number beyond a
    double, nesting past the parser's depth limit — rows stored before validation
    refused them) becomes UnreadableJson instead of failing the whole batch."""

    def load(self, data: Buffer) -> Any:
        try:
            return super().load(data)
        except (ValueError, RecursionError) as exc:
            return UnreadableJson(f"data cannot be decoded: {' '.join(str(exc).split())[:200]}")


# (user_id, projection_type, key): one projection row.
ProjectionRow = tuple[UUID, str, str]


@dataclass(frozen=True, slots=True)
class ProjectionWrite:
    """One row to write, with the version of the logic that computed it."""

    user_id: UUID
    projection_type: str
    key: str
    data: Mapping[str, Any]
    model_version: str
    last_event_id: UUID | None
    revision: int  # refused when the stored row has a higher one

    @property
    def row(self) -> ProjectionRow:
        return (self.user_id, self.projection_type, self.key)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one `write_projections` did: rows written, rows a higher revision kept."""

    written: int
    superseded: tuple[ProjectionRow, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredProjection:
    projection_type: str
    key: str
    data: dict[str, Any]
    version: int
    model_version: str | None
    last_event_id: UUID | None
    updated_at: datetime
    revision: int  # of the logic that wrote it; 0: written before revisions existed


def load_events_for_users(
    conn: DbConnection,
    user_ids: Collection[UUID],
    event_types: Collection[str],
    daily_event_types: Collection[str] = (),
) -> dict[UUID, list[Event]]:
    """Each user's events of `event_types` (in no particular order); every user gets a key.

    Events of `daily_event_types` come collapsed to the latest per UTC day, without data,
    except those a retraction names. The users' retractions always come along, whole:
    the folds apply them (stride.domain.events.without_retracted).
    """
    by_user: dict[UUID, list[Event]] = {user_id: [] for user_id in user_ids}
    if not by_user:
        return by_user
    # Binary results: uuids and timestamps decode in C without text parsing.
    cursor = conn.cursor(binary=True)
    cursor.adapters.register_loader("jsonb", _TolerantJsonbBinaryLoader)
    rows = cursor.execute(
        LOAD_EVENTS,
        {
            "min_ts": MIN_TIMESTAMP,
            "max_ts": MAX_TIMESTAMP,
            "user_ids": list(by_user),
            # Disjoint lists, so each branch is an index range scan on
            # (user_id, event_type) and never reads the other's rows.
            "whole": sorted({*event_types, RETRACTION_EVENT_TYPE} - set(daily_event_types)),
            "daily": sorted(set(event_types) & set(daily_event_types)),
        },
        prepare=True,
    ).fetchall()
    for event_id, user_id, event_type, timestamp, data in rows:
        if timestamp is None:
            event = Event(
                event_id,
                user_id,
                event_type,
                UNREADABLE_TIMESTAMP,
                {},
                unreadable="timestamp outside the range stride can read back",
            )
        elif isinstance(data, UnreadableJson):
            event = Event(event_id, user_id, event_type, timestamp, {}, unreadable=data.reason)
        else:
            event = Event(event_id, user_id, event_type, timestamp, data or {})
        by_user[user_id].append(event)
    return by_user


def write_projections(conn: DbConnection, writes: Iterable[ProjectionWrite]) -> WriteResult:
    """Upsert projections in one statement, never replacing a row of a higher revision.

    Returns how many rows were written and which were superseded (refused
    because the stored row's revision is higher than the write's).
    """
    batch = sorted(writes, key=lambda w: (str(w.user_id), w.projection_type, w.key))
    if not batch:
        return WriteResult(0)
    # Sorted so concurrent writers touching overlapping rows lock them in the
    # same order (no deadlocks between batches). The row locks are those of any
    # INSERT ... ON CONFLICT: each row is locked (also when its write is
    # refused) until the transaction ends.
    row = conn.execute(
        UPSERT_PROJECTIONS,
        {
            "user_ids": [w.user_id for w in batch],
            "projection_types": [w.projection_type for w in batch],
            "keys": [w.key for w in batch],
            "data": [orjson.dumps(w.data, option=orjson.OPT_SORT_KEYS).decode() for w in batch],
            "model_versions": [w.model_version for w in batch],
            "revisions": [w.revision for w in batch],
            "last_event_ids": [w.last_event_id for w in batch],
        },
        prepare=True,
    ).fetchone()
    assert row is not None  # an aggregate without GROUP BY always has one row
    _, written, user_ids, projection_types, keys = row
    if written == len(batch):
        return WriteResult(written)
    kept = set(zip(user_ids or (), projection_types or (), keys or (), strict=True))
    return WriteResult(written, tuple(w.row for w in batch if w.row not in kept))


def read_projections(
    conn: DbConnection, user_id: UUID, projection_type: str | None = None
) -> list[StoredProjection]:
    """A user's stored projections, optionally of one type."""
    rows = conn.execute(
        READ_PROJECTIONS, {"user_id": user_id, "projection_type": projection_type}
    ).fetchall()
    return [StoredProjection(*row) for row in rows]


def existing_user_ids(conn: DbConnection, user_ids: Sequence[UUID]) -> set[UUID]:
    """The subset of `user_ids` that exist in `users`."""
    rows = conn.execute("SELECT id FROM users WHERE id = ANY(%s)", (list(user_ids),)).fetchall()
    return {row[0] for row in rows}


SAMPLE_USER_WITH_PROJECTION = """
SELECT user_id FROM projections
WHERE projection_type = %(projection_type)s AND key = %(key)s
ORDER BY user_id
LIMIT 1
"""


def sample_user_with_projection(conn: DbConnection, projection_type: str, key: str) -> UUID | None:
    """Some user who has this projection (the first by id), or None."""
    row = conn.execute(
        SAMPLE_USER_WITH_PROJECTION, {"projection_type": projection_type, "key": key}
    ).fetchone()
    return row[0] if row else None


# --- async reads (the HTTP API) --------------------------------------------------------


async def read_projection_async(
    aconn: AsyncDbConnection, user_id: UUID, projection_type: str, key: str
) -> StoredProjection | None:
    """One stored projection of a user, or None."""
    cursor = await aconn.execute(
        READ_PROJECTION, {"user_id": user_id, "projection_type": projection_type, "key": key}
    )
    row = await cursor.fetchone()
    return StoredProjection(*row) if row else None


async def read_projections_async(
    aconn: AsyncDbConnection, user_id: UUID, projection_type: str | None = None
) -> list[StoredProjection]:
    """A user's stored projections, optionally of one type (as `read_projections`)."""
    cursor = await aconn.execute(
        READ_PROJECTIONS, {"user_id": user_id, "projection_type": projection_type}
    )
    return [StoredProjection(*row) for row in await cursor.fetchall()]


async def event_job_statuses_async(
    aconn: AsyncDbConnection, user_id: UUID, event_id: UUID
) -> list[str | None] | None:
    """Statuses of the projection.update jobs of one of the user's events.

    None when the event is not this user's; [None] when it has no job row.
    """
    cursor = await aconn.execute(EVENT_JOB_STATUSES, {"user_id": user_id, "event_id": event_id})
    rows = await cursor.fetchall()
    return [row[0] for row in rows] if rows else None


async def job_statuses_by_event_async(
    aconn: AsyncDbConnection, event_ids: Collection[UUID]
) -> dict[UUID, list[str]]:
    """Statuses of the projection.update jobs of each event (events without jobs are absent)."""
    cursor = await aconn.execute(JOB_STATUSES_BY_EVENT, {"event_ids": [str(e) for e in event_ids]})
    found: dict[UUID, list[str]] = {}
    for event_id, status in await cursor.fetchall():
        found.setdefault(event_id, []).append(status)
    return found
