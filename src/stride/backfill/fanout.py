"""The controller job: walk the user snapshot in chunks and fan out projection.update jobs.

Each chunk is one set-based statement committed together with the run's
checkpoint, so a crashed or restarted controller resumes at the next chunk and
never enqueues a job twice (the dedup key also holds while jobs are in flight).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import sql

from stride.backfill import FANOUT_PRIORITY
from stride.domain.events import OBJECTIVE_EVENT_TYPES
from stride.domain.job_types import PROJECTION_UPDATE_JOB_TYPE
from stride.queue.jobs import enqueue_from_query
from stride.storage.connection import DbConnection

log = logging.getLogger(__name__)

DEFAULT_CHUNK_USERS = 5000

# The run row is the controller's checkpoint. FOR UPDATE makes a second
# controller of the same run (one whose lease was taken over) wait here and
# then read the advanced position, so no chunk is fanned out twice.
LOCK_RUN = """
SELECT source, snapshot_id, users_total, next_position, max_rate, cancel_requested
FROM backfill_runs
WHERE job_id = %(job_id)s
FOR UPDATE
"""

# The chunk's jobs, enqueued by the queue in one statement (enqueue_from_query):
# for every user in the chunk and every objective event type, the user's latest
# event of that type (an index probe on events_user_type_order); users with no
# profile.updated get a deterministic synthetic event id so every snapshotted
# user ends with both projections. Jobs come out user by user, so one user's
# jobs sit next to each other in claim order and coalesce in one batch. The
# dedup key is fanout_dedup_key's, built in SQL (a test holds the two equal).
# Every job carries the revisions of the code that triggered the run (NULL for
# a run recorded before revisions): a worker running older logic defers such a
# job to a newer one (stride.app).
FAN_OUT_CHUNK = sql.SQL("""
WITH chunk AS (
    SELECT s.user_id
    FROM backfill_snapshot_users s
    WHERE s.snapshot_id = %(snapshot_id)s
      AND s.position >= %(start)s AND s.position < %(stop)s
),
targets AS (
    SELECT c.user_id,
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
       %(job_type)s || ':' || %(source)s || ':' || user_id::text || ':' || event_type AS dedup_key
FROM targets
WHERE event_id IS NOT NULL
ORDER BY user_id, ord
""")

MAX_RATE = "SELECT max_rate FROM backfill_runs WHERE job_id = %(job_id)s"

ADVANCE_RUN = """
UPDATE backfill_runs
SET next_position = %(next_position)s,
    jobs_enqueued = jobs_enqueued + %(jobs)s,
    fanout_done_at = CASE WHEN %(next_position)s > users_total THEN clock_timestamp() END,
    updated_at = clock_timestamp()
WHERE job_id = %(job_id)s
"""


def fanout_dedup_key(source: str, user_id: UUID, event_type: str) -> str:
    """At most one in-flight fan-out job per (source, user, event type).

    Unambiguous although a source may contain ':' — the user id and event type
    after it never do. FAN_OUT_CHUNK builds the same key in SQL.
    """
    return f"{PROJECTION_UPDATE_JOB_TYPE}:{source}:{user_id}:{event_type}"


class ControllerLeaseLostError(RuntimeError):
    """The controller job's lease was taken over while it was fanning out."""


@dataclass(frozen=True, slots=True)
class FanOutSummary:
    users: int
    jobs_enqueued: int
    cancelled: bool


@dataclass(slots=True)
class _Run:
    source: str
    snapshot_id: UUID
    users_total: int
    next_position: int
    max_rate: float | None
    cancel_requested: bool


def _lock_run(conn: DbConnection, job_id: int) -> _Run | None:
    row = conn.execute(LOCK_RUN, {"job_id": job_id}).fetchone()
    return _Run(*row) if row else None


def fan_out_next_chunk(conn: DbConnection, job_id: int, chunk_users: int) -> tuple[_Run, int, int]:
    """Fan out one chunk and advance the checkpoint in one transaction.

    Returns the run as it was, users in the chunk and jobs enqueued.
    """
    with conn.transaction():
        run = _lock_run(conn, job_id)
        if run is None:
            raise LookupError(f"no backfill run recorded for job {job_id}")
        if run.cancel_requested or run.next_position > run.users_total:
            return run, 0, 0
        start = run.next_position
        stop = min(start + chunk_users, run.users_total + 1)
        params: dict[str, Any] = {
            "snapshot_id": run.snapshot_id,
            "start": start,
            "stop": stop,
            "source": run.source,
            "event_types": list(OBJECTIVE_EVENT_TYPES),
            "job_type": PROJECTION_UPDATE_JOB_TYPE,
            "job_id": job_id,
            "priority": FANOUT_PRIORITY,
        }
        # Skips jobs whose key is in flight; notifies workers at commit.
        jobs = enqueue_from_query(conn, FAN_OUT_CHUNK, params)
        conn.execute(ADVANCE_RUN, {"next_position": stop, "jobs": jobs, "job_id": job_id})
    return run, stop - start, jobs


def run_fan_out(
    conn: DbConnection,
    job_id: int,
    *,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    heartbeat: Callable[[], bool] = lambda: True,
    sleep: Callable[[float], None] = time.sleep,
) -> FanOutSummary:
    """Fan out the whole snapshot from the checkpoint on, honouring max_rate and cancel.

    `conn` must be an autocommit connection of its own: every chunk commits
    separately, independent of the controller job's completion transaction.
    """
    users = jobs_total = 0
    started = time.monotonic()
    rate = conn.execute(MAX_RATE, {"job_id": job_id}).fetchone()
    if rate and rate[0]:
        # Throttled runs take about a second's worth of users per chunk, so the
        # lease heartbeat and cancellation are checked often.
        chunk_users = max(1, min(chunk_users, int(rate[0])))
    while True:
        run, chunk_users_done, jobs = fan_out_next_chunk(conn, job_id, chunk_users)
        if chunk_users_done == 0:
            return FanOutSummary(users, jobs_total, run.cancel_requested)
        users += chunk_users_done
        jobs_total += jobs
        log.info(
            "backfill %s fanned out users %d..%d of %d (%d jobs)",
            job_id,
            run.next_position,
            run.next_position + chunk_users_done - 1,
            run.users_total,
            jobs,
        )
        if not heartbeat():
            # Another worker holds this controller job now; its chunks are
            # fenced by the run row lock, so stop rather than race it.
            raise ControllerLeaseLostError(f"backfill {job_id}: lease lost, stopping fan-out")
        if run.max_rate:
            # Throttle: never fan out faster than max_rate users per second.
            ahead = users / run.max_rate - (time.monotonic() - started)
            if ahead > 0:
                sleep(ahead)
