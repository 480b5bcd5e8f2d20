"""The controller job: walk the user snapshot one chunk per step, fanning out projection.update.

The controller never holds a runner for long: each run of its job fans out one
chunk in one set-based statement, advances the run's checkpoint, and then
defers itself (back to pending, no attempt spent) until the next chunk is due;
the last step completes it. Organic jobs, which have a higher priority, run
between steps, and two runs of different sources take turns instead of one
runner holding both. A step's jobs, its checkpoint and the controller's
deferral commit together in the runner's transaction, so a crashed or
taken-over controller repeats at most an uncommitted step and no chunk is ever
fanned out twice (the dedup key also holds while jobs are in flight).

With `max_rate` (users per second), each chunk's jobs are scheduled
1/max_rate apart, continuing where the previous chunk's schedule ended: the
rate caps the projection work itself, not only the enqueueing, and a worker
that fell behind catches up by at most one chunk.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import sql

from stride.backfill import FANOUT_PRIORITY
from stride.domain.events import OBJECTIVE_EVENT_TYPES
from stride.domain.job_types import PROJECTION_UPDATE_JOB_TYPE
from stride.queue.jobs import enqueue_from_query
from stride.storage.connection import DbConnection

log = logging.getLogger(__name__)

# An unthrottled step: 5,000 users (about 15,000 jobs) in about half a second.
DEFAULT_CHUNK_USERS = 5000
# ...after a ramp: the first step fans out this many users and each next one as
# many as all the steps before it (500, 500, 1,000, 2,000, 4,000, then 5,000 a
# step), so workers get their first jobs after ~40 ms instead of waiting
# ~370 ms for a full chunk.
FIRST_CHUNK_USERS = 500
# A throttled step enqueues about this many seconds of work...
THROTTLED_STEP_SECONDS = 2.0
# ...and the next step runs this long before that work's last job is due, so
# the schedule continues without a gap (workers look for due jobs every second).
THROTTLED_LEAD_SECONDS = 1.0

# The run row is the controller's checkpoint. FOR UPDATE: a second controller of
# the same run (one that took over an expired lease) waits here for the first
# one's step to commit or roll back, then reads the advanced position, so no
# chunk is fanned out twice; `stride backfill cancel` takes the same lock.
# chunk_due_at: when this chunk's first job is due under max_rate — where the
# previous chunk's schedule ended, or now when that is past.
LOCK_RUN = """
SELECT source, snapshot_id, users_total, next_position, max_rate, cancel_requested,
       greatest(clock_timestamp(), coalesce(next_due_at, '-infinity')) AS chunk_due_at
FROM backfill_runs
WHERE job_id = %(job_id)s
FOR UPDATE
"""

# The chunk's jobs, enqueued by the queue in one statement (enqueue_from_query):
# for every user in the chunk and every objective event type, the user's latest
# event of that type (an index probe on events_user_type_order); users with no
# profile.updated get a deterministic synthetic event id so every snapshotted
# user ends with both projections. Jobs come out user by user, so one user's
# jobs sit next to each other in claim order and coalesce in one batch: in
# snapshot order, which the chunk is read in, so the sort only orders each
# user's few jobs (an incremental sort; ordered by user id, the whole chunk's
# 15,000 rows were sorted and spilled to disk, a tenth of the step). The
# dedup key is fanout_dedup_key's, built in SQL (a test holds the two equal).
# Throttled, a user's jobs are due (position - start) / max_rate seconds after
# chunk_due_at; unthrottled, now.
# Every job carries the revisions of the code that triggered the run (NULL for
# a run recorded before revisions): a worker running older logic defers such a
# job to a newer one (stride.app).
FAN_OUT_CHUNK = sql.SQL("""
WITH chunk AS (
    SELECT s.user_id, s.position
    FROM backfill_snapshot_users s
    WHERE s.snapshot_id = %(snapshot_id)s
      AND s.position >= %(start)s AND s.position < %(stop)s
),
targets AS (
    SELECT c.user_id,
           c.position,
           t.event_type,
           t.ord,
           coalesce(
               latest.id,
               CASE WHEN t.event_type = 'profile.updated'
                    THEN md5(
                        'stride.objective_backfill:' || %(source)s || ':' || c.user_id::text
                    )::uuid
               END
           ) AS event_id,
           latest.id IS NULL AS synthetic
    FROM chunk c
    CROSS JOIN unnest(%(event_types)s::text[]) WITH ORDINALITY AS t(event_type, ord)
    LEFT JOIN LATERAL (
        SELECT e.id
        FROM events e
        WHERE e.user_id = c.user_id AND e.event_type = t.event_type
        ORDER BY e."timestamp" DESC, e.id DESC
        LIMIT 1
    ) latest ON true
)
SELECT %(job_type)s AS job_type,
       jsonb_build_object(
           'source', %(source)s,
           'user_id', user_id::text,
           'event_type', event_type,
           'event_id', event_id::text,
           'synthetic', synthetic,
           'backfill_job_id', %(job_id)s,
           'revisions', (SELECT r.revisions FROM backfill_runs r WHERE r.job_id = %(job_id)s)
       ) AS payload,
       user_id,
       %(priority)s AS priority,
       %(job_type)s || ':' || %(source)s || ':' || user_id::text || ':' || event_type AS dedup_key,
       CASE WHEN %(max_rate)s::float8 IS NULL THEN now()
            ELSE %(chunk_due_at)s::timestamptz
                 + make_interval(secs => (position - %(start)s) / %(max_rate)s::float8)
       END AS scheduled_for
FROM targets
WHERE event_id IS NOT NULL
ORDER BY position, ord
""")

ADVANCE_RUN = """
UPDATE backfill_runs
SET next_position = %(next_position)s,
    jobs_enqueued = jobs_enqueued + %(jobs)s,
    next_due_at = %(next_due_at)s,
    fanout_done_at = CASE WHEN %(next_position)s > users_total THEN clock_timestamp() END,
    updated_at = clock_timestamp()
WHERE job_id = %(job_id)s
RETURNING clock_timestamp()
"""


def fanout_dedup_key(source: str, user_id: UUID, event_type: str) -> str:
    """At most one in-flight fan-out job per (source, user, event type).

    Unambiguous although a source may contain ':' — the user id and event type
    after it never do. FAN_OUT_CHUNK builds the same key in SQL.
    """
    return f"{PROJECTION_UPDATE_JOB_TYPE}:{source}:{user_id}:{event_type}"


class RunNotFoundError(LookupError):
    """The controller job has no backfill_runs row (retrying cannot help)."""


@dataclass(frozen=True, slots=True)
class FanOutStep:
    """What one step of the controller did, and what comes next."""

    first_position: int  # the chunk's first snapshot position
    users: int  # users fanned out by this step
    jobs_enqueued: int
    users_total: int
    cancelled: bool  # the run was cancelled: nothing was done
    done: bool  # the whole snapshot is fanned out: the controller completes
    next_step_in: float  # seconds until the next step is due (when not done)


def step_chunk_users(max_rate: float | None, start: int = 1) -> int:
    """Users in the step that begins at snapshot position `start` (1-based): ramping up to a
    fixed chunk, or about THROTTLED_STEP_SECONDS of work under max_rate."""
    if max_rate is None:
        return min(DEFAULT_CHUNK_USERS, max(FIRST_CHUNK_USERS, start - 1))
    return max(1, min(DEFAULT_CHUNK_USERS, math.ceil(max_rate * THROTTLED_STEP_SECONDS)))


def next_step_delay(next_due_at: datetime | None, now: datetime) -> float:
    """Seconds the controller waits before its next step: none unthrottled, else until the
    scheduled work is THROTTLED_LEAD_SECONDS from running out."""
    if next_due_at is None:
        return 0.0
    return max(0.0, (next_due_at - now).total_seconds() - THROTTLED_LEAD_SECONDS)


def fan_out_step(conn: DbConnection, job_id: int, *, chunk_users: int | None = None) -> FanOutStep:
    """Fan out the next chunk of run `job_id` and advance its checkpoint, in one transaction.

    In a worker this runs inside the controller job's own transaction (a
    savepoint of it), so the chunk commits with the job's deferral or completion.
    """
    with conn.transaction():
        row = conn.execute(LOCK_RUN, {"job_id": job_id}).fetchone()
        if row is None:
            raise RunNotFoundError(f"no backfill run recorded for controller job {job_id}")
        source, snapshot_id, users_total, start, max_rate, cancel_requested, due_at = row
        if cancel_requested or start > users_total:
            return FanOutStep(start, 0, 0, users_total, cancel_requested, not cancel_requested, 0)
        stop = min(start + (chunk_users or step_chunk_users(max_rate, start)), users_total + 1)
        params: dict[str, Any] = {
            "snapshot_id": snapshot_id,
            "start": start,
            "stop": stop,
            "source": source,
            "event_types": list(OBJECTIVE_EVENT_TYPES),
            "job_type": PROJECTION_UPDATE_JOB_TYPE,
            "job_id": job_id,
            "priority": FANOUT_PRIORITY,
            "max_rate": max_rate,
            "chunk_due_at": due_at,
        }
        # Skips jobs whose key is in flight; notifies workers at commit.
        jobs = enqueue_from_query(conn, FAN_OUT_CHUNK, params, optional_columns=("scheduled_for",))
        next_due_at = due_at + timedelta(seconds=(stop - start) / max_rate) if max_rate else None
        advanced = conn.execute(
            ADVANCE_RUN,
            {"next_position": stop, "jobs": jobs, "next_due_at": next_due_at, "job_id": job_id},
        ).fetchone()
        assert advanced is not None  # the row is locked above
    done = stop > users_total
    log.info(
        "backfill %s fanned out users %d..%d of %d (%d jobs)%s",
        job_id,
        start,
        stop - 1,
        users_total,
        jobs,
        " - fan-out done" if done else "",
    )
    return FanOutStep(
        first_position=start,
        users=stop - start,
        jobs_enqueued=jobs,
        users_total=users_total,
        cancelled=False,
        done=done,
        next_step_in=0.0 if done else next_step_delay(next_due_at, advanced[0]),
    )
