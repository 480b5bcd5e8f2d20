"""Job rows in `background_jobs`: enqueue, claim, fenced completion, retries, leases, pruning.

Every state change a worker makes is *fenced*: the UPDATE names the job id, the
lease owner (`locked_by`) and the attempt it claimed, and requires
`status = 'processing'`. A worker whose lease expired and was taken over (or
whose job was already finished by someone else) matches no row, so a late
finisher can never overwrite the newer run. Functions here take a connection and
leave transaction control to the caller: the worker runs a handler and its
completion in one transaction.

A job runs at most `max_retries + 1` times; then it is `dead`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from stride.storage.connection import DbConnection

NOTIFY_CHANNEL = "stride_jobs"
# Notification payload when one enqueue carries several job types.
NOTIFY_ANY_TYPE = "*"
IN_FLIGHT_STATUSES = ("pending", "processing")
ERROR_MESSAGE_LIMIT = 4000


@dataclass(slots=True)
class NewJob:
    """A job to enqueue; `dedup_key` allows at most one pending-or-processing job per key."""

    job_type: str
    payload: dict[str, Any]
    user_id: UUID | None = None
    priority: int = 0
    max_retries: int = 5
    dedup_key: str | None = None
    scheduled_for: datetime | None = None


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The job id, and whether this call inserted it (False: an in-flight duplicate exists)."""

    job_id: int
    inserted: bool


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker holds a lease on; (id, locked_by, attempt) fence every update."""

    id: int
    job_type: str
    payload: dict[str, Any]
    user_id: UUID | None
    priority: int
    attempt: int
    max_retries: int
    locked_by: str
    locked_until: datetime
    dedup_key: str | None = None
    scheduled_for: datetime | None = None
    created_at: datetime | None = None
    error_message: str | None = field(default=None, repr=False)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt > self.max_retries


class FailOutcome(Enum):
    """What a failed attempt turned into."""

    RETRY = "retry"  # back to pending, scheduled after a backoff
    DEAD = "dead"  # attempts exhausted
    LOST = "lost"  # the lease was no longer ours: nothing was changed


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: base * 2^(attempt-1), capped, minus up to `jitter` of it.

    Jitter spreads the retries of jobs that failed together (a database blip)
    so they do not come back as one thundering herd.
    """

    base_seconds: float = 2.0
    max_seconds: float = 600.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exponent = min(max(attempt - 1, 0), 60)
        ceiling = min(self.max_seconds, self.base_seconds * (2.0**exponent))
        draw = (rng or random).random()
        return ceiling * (1.0 - self.jitter * draw)


DEFAULT_RETRY_POLICY = RetryPolicy()


# --- enqueue ---------------------------------------------------------------------------------

# The partial unique index background_jobs_dedup_in_flight arbitrates concurrent
# enqueuers: ON CONFLICT waits for an in-progress insert of the same key and then
# does nothing, so there is no check-then-insert race. pg_notify runs only when a
# row was inserted and is delivered at commit.
ENQUEUE_SQL = """
WITH inserted AS (
    INSERT INTO background_jobs
        (job_type, payload, user_id, priority, max_retries, dedup_key, scheduled_for)
    VALUES (%s, %s, %s, %s, %s, %s, coalesce(%s, now()))
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'processing')
    DO NOTHING
    RETURNING id, job_type
)
SELECT id, pg_notify('stride_jobs', job_type) FROM inserted
"""

FIND_IN_FLIGHT_SQL = """
SELECT id FROM background_jobs
WHERE dedup_key = %s AND status IN ('pending', 'processing')
"""

# One statement for the whole batch: the arrays are unnested in parallel, in-batch
# duplicates of a dedup key are dropped (first one wins), and ON CONFLICT skips
# keys already in flight (waiting on, never racing, a concurrent insert of a key).
ENQUEUE_MANY_SQL = """
WITH input AS (
    SELECT t.*,
           row_number() OVER (PARTITION BY t.dedup_key ORDER BY t.ord) AS key_rank
    FROM unnest(
        %s::text[], %s::text[], %s::uuid[], %s::int[], %s::int[], %s::text[], %s::timestamptz[]
    ) WITH ORDINALITY
        AS t(job_type, payload, user_id, priority, max_retries, dedup_key, scheduled_for, ord)
),
inserted AS (
    INSERT INTO background_jobs
        (job_type, payload, user_id, priority, max_retries, dedup_key, scheduled_for)
    SELECT job_type, payload::jsonb, user_id, priority, max_retries, dedup_key,
           coalesce(scheduled_for, now())
    FROM input
    WHERE dedup_key IS NULL OR key_rank = 1
    ORDER BY ord
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'processing')
    DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""

NOTIFY_SQL = "SELECT pg_notify('stride_jobs', %s)"


def enqueue(conn: DbConnection, job: NewJob) -> EnqueueResult:
    """Insert one job, or report the in-flight job that already holds its dedup key."""
    params = (
        job.job_type,
        Jsonb(job.payload),
        job.user_id,
        job.priority,
        job.max_retries,
        job.dedup_key,
        job.scheduled_for,
    )
    while True:
        row = conn.execute(ENQUEUE_SQL, params).fetchone()
        if row is not None:
            return EnqueueResult(int(row[0]), inserted=True)
        existing = conn.execute(FIND_IN_FLIGHT_SQL, (job.dedup_key,)).fetchone()
        if existing is not None:
            return EnqueueResult(int(existing[0]), inserted=False)
        # The holder of the key finished between our insert and our look-up: the
        # key is free again, so try to insert once more.


def enqueue_many(conn: DbConnection, jobs: Sequence[NewJob]) -> int:
    """Insert many jobs in one statement, skipping in-flight dedup keys; returns the count."""
    if not jobs:
        return 0
    job_types = [j.job_type for j in jobs]
    inserted_row = conn.execute(
        ENQUEUE_MANY_SQL,
        (
            job_types,
            [json.dumps(j.payload, separators=(",", ":")) for j in jobs],
            [j.user_id for j in jobs],
            [j.priority for j in jobs],
            [j.max_retries for j in jobs],
            [j.dedup_key for j in jobs],
            [j.scheduled_for for j in jobs],
        ),
    ).fetchone()
    inserted = int(inserted_row[0]) if inserted_row else 0
    if inserted:
        distinct = set(job_types)
        conn.execute(NOTIFY_SQL, (distinct.pop() if len(distinct) == 1 else NOTIFY_ANY_TYPE,))
    return inserted


# --- claim -----------------------------------------------------------------------------------

# FOR UPDATE SKIP LOCKED: concurrent workers each lock a disjoint set of due rows
# without waiting on one another; the locks last only for this statement's
# transaction, after which status = 'processing' keeps other claimers away. The
# ids come from an ARRAY(...) init plan, evaluated exactly once (a semi-join could
# re-run a LIMIT subquery), and the outer UPDATE finds them by primary key. The
# inner scan walks background_jobs_claim in its order.
_CLAIM_TEMPLATE = """
UPDATE background_jobs
SET status = 'processing',
    attempt = attempt + 1,
    started_at = clock_timestamp(),
    locked_by = %(worker_id)s,
    locked_until = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
WHERE id = ANY(ARRAY(
    SELECT id FROM background_jobs
    WHERE status = 'pending' AND scheduled_for <= now(){type_filter}
    ORDER BY priority DESC, scheduled_for, id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
))
RETURNING id, job_type, payload, user_id, priority, attempt, max_retries, locked_by,
          locked_until, dedup_key, scheduled_for, created_at, error_message
"""
CLAIM_SQL = _CLAIM_TEMPLATE.format(type_filter="")
CLAIM_TYPES_SQL = _CLAIM_TEMPLATE.format(type_filter=" AND job_type = ANY(%(job_types)s::text[])")


def claim_due_jobs(
    conn: DbConnection,
    worker_id: str,
    batch_size: int,
    lease_seconds: float,
    job_types: Sequence[str] | None = None,
) -> list[ClaimedJob]:
    """Lease up to `batch_size` due jobs (highest priority, then oldest due, then id)."""
    params: dict[str, Any] = {
        "worker_id": worker_id,
        "lease_seconds": float(lease_seconds),
        "batch_size": batch_size,
    }
    if job_types is not None:
        params["job_types"] = list(job_types)
    rows = conn.execute(CLAIM_TYPES_SQL if job_types is not None else CLAIM_SQL, params).fetchall()
    jobs = [
        ClaimedJob(
            id=r[0],
            job_type=r[1],
            payload=r[2],
            user_id=r[3],
            priority=r[4],
            attempt=r[5],
            max_retries=r[6],
            locked_by=r[7],
            locked_until=r[8],
            dedup_key=r[9],
            scheduled_for=r[10],
            created_at=r[11],
            error_message=r[12],
        )
        for r in rows
    ]
    # RETURNING follows no order; hand jobs out in claim order.
    jobs.sort(key=lambda j: (-j.priority, j.scheduled_for, j.id))
    return jobs


# --- fenced transitions ----------------------------------------------------------------------

# Fenced by (id, attempt) pairs plus the lease owner: a job whose lease was taken
# over has a newer attempt or another owner, and is left alone. The row locks
# taken here are held until the caller's transaction (the handler's) commits.
# The redundant `j.id = ANY(ids)` lets the planner fetch the batch by primary key
# instead of hashing every processing row.
#
# The array-driven statements below run unprepared (prepare=False): a generic
# plan cannot see the array's length, and measured 15x slower than the custom
# plan for a batch of 1000; planning costs well under a millisecond.
COMPLETE_SQL = """
UPDATE background_jobs AS j
SET status = 'completed', completed_at = clock_timestamp(), locked_until = NULL
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS done(id, attempt)
WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = done.id AND j.attempt = done.attempt
  AND j.status = 'processing' AND j.locked_by = %(owner)s
RETURNING j.id
"""

COMPLETE_ONE_SQL = """
UPDATE background_jobs
SET status = 'completed', completed_at = clock_timestamp(), locked_until = NULL
WHERE id = %s AND attempt = %s AND status = 'processing' AND locked_by = %s
"""

FAIL_SQL = """
UPDATE background_jobs
SET status = CASE WHEN attempt > max_retries THEN 'dead' ELSE 'pending' END,
    error_message = %s,
    scheduled_for = CASE WHEN attempt > max_retries THEN scheduled_for
                         ELSE clock_timestamp() + make_interval(secs => %s) END,
    completed_at = CASE WHEN attempt > max_retries THEN clock_timestamp() END,
    locked_until = NULL
WHERE id = %s AND attempt = %s AND status = 'processing' AND locked_by = %s
RETURNING status
"""

MARK_DEAD_SQL = """
UPDATE background_jobs
SET status = 'dead', error_message = %s, completed_at = clock_timestamp(), locked_until = NULL
WHERE id = %s AND attempt = %s AND status = 'processing' AND locked_by = %s
"""

# Back to pending without spending an attempt: the claim's increment is undone.
DEFER_SQL = """
UPDATE background_jobs AS j
SET status = 'pending', attempt = j.attempt - 1, locked_by = NULL, locked_until = NULL,
    scheduled_for = clock_timestamp() + make_interval(secs => later.delay)
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(delays)s::float8[])
    AS later(id, attempt, delay)
WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = later.id AND j.attempt = later.attempt
  AND j.status = 'processing' AND j.locked_by = %(owner)s
RETURNING j.id
"""

# Like DEFER_SQL but keeps scheduled_for, so a released job keeps its place in line.
RELEASE_SQL = """
UPDATE background_jobs AS j
SET status = 'pending', attempt = j.attempt - 1, locked_by = NULL, locked_until = NULL
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS back(id, attempt)
WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = back.id AND j.attempt = back.attempt
  AND j.status = 'processing' AND j.locked_by = %(owner)s
RETURNING j.id
"""

# Lease rows locked by another transaction are skipped rather than waited on:
# they are being completed or reclaimed right now, so extending them is moot.
EXTEND_LEASE_SQL = """
UPDATE background_jobs AS j
SET locked_until = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS held(id, attempt)
WHERE j.id = held.id AND j.attempt = held.attempt
  AND j.status = 'processing' AND j.locked_by = %(owner)s
  AND j.id = ANY(ARRAY(
      SELECT id FROM background_jobs
      WHERE id = ANY(%(ids)s::bigint[])
      FOR UPDATE SKIP LOCKED
  ))
RETURNING j.id
"""


def _fenced_update(
    conn: DbConnection, statement: str, jobs: Sequence[ClaimedJob], **params: Any
) -> set[int]:
    """Run one of the array-driven fenced statements; returns the ids still ours."""
    if not jobs:
        return set()
    params |= {
        "ids": [j.id for j in jobs],
        "attempts": [j.attempt for j in jobs],
        "owner": _single_owner(jobs),
    }
    rows = conn.execute(statement, params, prepare=False)
    return {r[0] for r in rows.fetchall()}


def _single_owner(jobs: Sequence[ClaimedJob]) -> str:
    owners = {j.locked_by for j in jobs}
    if len(owners) != 1:
        raise ValueError(f"jobs from several lease owners in one call: {sorted(owners)}")
    return owners.pop()


def complete_many(conn: DbConnection, jobs: Sequence[ClaimedJob]) -> set[int]:
    """Mark held jobs completed in one statement; returns the ids still ours (others were lost)."""
    return _fenced_update(conn, COMPLETE_SQL, jobs)


def complete(conn: DbConnection, job: ClaimedJob) -> bool:
    """Mark one held job completed; False when the lease was lost (nothing changed)."""
    cursor = conn.execute(COMPLETE_ONE_SQL, (job.id, job.attempt, job.locked_by))
    return cursor.rowcount == 1


def truncate_error(message: str) -> str:
    return (
        message if len(message) <= ERROR_MESSAGE_LIMIT else message[: ERROR_MESSAGE_LIMIT - 1] + "…"
    )


def fail(
    conn: DbConnection,
    job: ClaimedJob,
    error: str,
    *,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    delay_seconds: float | None = None,
) -> FailOutcome:
    """Record a failed attempt: retry after a backoff, or `dead` once attempts are exhausted."""
    delay = policy.delay(job.attempt) if delay_seconds is None else delay_seconds
    row = conn.execute(
        FAIL_SQL, (truncate_error(error), delay, job.id, job.attempt, job.locked_by)
    ).fetchone()
    if row is None:
        return FailOutcome.LOST
    return FailOutcome.DEAD if row[0] == "dead" else FailOutcome.RETRY


def mark_dead(conn: DbConnection, job: ClaimedJob, reason: str) -> bool:
    """Give up on a held job at once (e.g. no handler for its type); False when lost."""
    cursor = conn.execute(
        MARK_DEAD_SQL, (truncate_error(reason), job.id, job.attempt, job.locked_by)
    )
    return cursor.rowcount == 1


def defer_many(conn: DbConnection, jobs: Sequence[ClaimedJob], delays: Sequence[float]) -> set[int]:
    """Return held jobs to pending after per-job delays without spending an attempt."""
    return _fenced_update(conn, DEFER_SQL, jobs, delays=[float(d) for d in delays])


def defer(conn: DbConnection, job: ClaimedJob, delay_seconds: float) -> bool:
    """Return a held job to pending after `delay_seconds` without spending an attempt."""
    return bool(defer_many(conn, [job], [delay_seconds]))


def release(conn: DbConnection, jobs: Sequence[ClaimedJob]) -> set[int]:
    """Hand back claimed-but-unstarted jobs, keeping their place in line and their attempts."""
    return _fenced_update(conn, RELEASE_SQL, jobs)


def extend_lease(conn: DbConnection, jobs: Sequence[ClaimedJob], lease_seconds: float) -> set[int]:
    """Push the lease of held jobs `lease_seconds` into the future; returns the ids still ours."""
    return _fenced_update(conn, EXTEND_LEASE_SQL, jobs, lease_seconds=float(lease_seconds))


# --- maintenance -----------------------------------------------------------------------------

# A lease that ran out means its worker died, hung or lost its connection. The
# job goes back to pending keeping its attempt count (the crashed run counts),
# or dead when crashes used up its attempts, so a job that kills its worker
# cannot loop forever. SKIP LOCKED: a row locked right now belongs to a live
# transaction (its owner is completing it) and is not ours to judge.
RECLAIM_SQL = """
WITH expired AS (
    SELECT id FROM background_jobs
    WHERE status = 'processing' AND locked_until < clock_timestamp()
    ORDER BY locked_until
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE background_jobs AS j
SET status = CASE WHEN j.attempt > j.max_retries THEN 'dead' ELSE 'pending' END,
    error_message = CASE
        WHEN j.attempt > j.max_retries THEN
            'lease expired on attempt ' || j.attempt || ' (worker ' || coalesce(j.locked_by, '?')
            || ' died or lost its connection); no attempts left'
        ELSE
            'lease expired on attempt ' || j.attempt || ' (worker ' || coalesce(j.locked_by, '?')
            || ' died or lost its connection); reclaimed'
        END,
    completed_at = CASE WHEN j.attempt > j.max_retries THEN clock_timestamp() END,
    scheduled_for = CASE WHEN j.attempt > j.max_retries THEN j.scheduled_for
                         ELSE clock_timestamp() END,
    locked_until = NULL
FROM expired
WHERE j.id = expired.id
"""

# Short transactions of at most `batch_size` rows: pruning never holds many row
# locks or blocks claimers for long. SKIP LOCKED leaves rows someone else holds.
PRUNE_SQL = """
WITH doomed AS (
    SELECT id FROM background_jobs
    WHERE status = 'completed' AND completed_at < clock_timestamp() - %s::interval
    ORDER BY completed_at
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM background_jobs AS j USING doomed WHERE j.id = doomed.id
"""

# Revive dead jobs with a fresh set of attempts. A dedup key already in flight
# (or revived twice) would break the unique index, so only the newest dead job
# per key is revived, and only while the key is free.
RETRY_DEAD_SQL = """
WITH revivable AS (
    SELECT DISTINCT ON (coalesce(d.dedup_key, d.id::text)) d.id
    FROM background_jobs AS d
    WHERE d.status = 'dead'
      AND (%(job_type)s::text IS NULL OR d.job_type = %(job_type)s::text)
      AND (d.dedup_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM background_jobs AS f
          WHERE f.dedup_key = d.dedup_key AND f.status IN ('pending', 'processing')
      ))
    ORDER BY coalesce(d.dedup_key, d.id::text), d.id DESC
)
UPDATE background_jobs AS j
SET status = 'pending', attempt = 0, scheduled_for = now(), completed_at = NULL,
    locked_by = NULL, locked_until = NULL
FROM revivable
WHERE j.id = revivable.id
"""


def reclaim_expired_leases(conn: DbConnection, *, batch_size: int = 1000) -> int:
    """Return jobs with expired leases to pending (or dead when out of attempts); returns count."""
    total = 0
    while True:
        with conn.transaction():
            count = conn.execute(RECLAIM_SQL, (batch_size,)).rowcount
        total += count
        if count < batch_size:
            return total


def prune_completed(conn: DbConnection, older_than: timedelta, batch_size: int = 1000) -> int:
    """Delete completed jobs older than `older_than`, `batch_size` rows per transaction."""
    total = 0
    while True:
        with conn.transaction():
            count = conn.execute(PRUNE_SQL, (older_than, batch_size)).rowcount
        total += count
        if count < batch_size:
            return total


def retry_dead(conn: DbConnection, job_type: str | None = None) -> int:
    """Put dead jobs (optionally of one type) back to pending with fresh attempts; returns count."""
    with conn.transaction():
        count = conn.execute(RETRY_DEAD_SQL, {"job_type": job_type}).rowcount
        if count:
            conn.execute(NOTIFY_SQL, (job_type or NOTIFY_ANY_TYPE,))
    return count
