"""Job rows in `background_jobs`: enqueue, claim, fenced settlement, retries, leases, cancel.

The queue package is the only Python code that writes `background_jobs`; the
backfill asks it for a set-based enqueue (`enqueue_from_query`) or a cancel by
filter (`cancel_pending`) instead of writing statements of its own.

Every state change a worker makes is *fenced*: the UPDATE names the job id, the
lease owner (`locked_by`) and the attempt it claimed, and requires
`status = 'processing'`. A worker whose lease expired and was taken over (or
whose job was already finished by someone else) matches no row, so a late
finisher can never overwrite the newer run. Functions here take a connection and
leave transaction control to the caller: the worker runs a handler and its
completion in one transaction.

A job runs at most `max_retries + 1` times; then it is `dead`. A handler that
knows retrying cannot help has it end `failed` at once (`mark_failed`).
"""

from __future__ import annotations

import json
import operator
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any, Final
from uuid import UUID

import orjson
from psycopg import Cursor, errors, sql
from psycopg.rows import RowMaker
from psycopg.types.json import Jsonb

from stride.storage.connection import DbConnection

# The channel workers LISTEN on. SQL sends on it only through stride_notify_jobs()
# (migration 0005), which names the same channel; an integration test holds the
# two together by listening here for a notification sent by the events trigger.
NOTIFY_CHANNEL: Final = "stride_jobs"
# Notification payload when one enqueue carries several job types.
NOTIFY_ANY_TYPE: Final = "*"
ERROR_MESSAGE_LIMIT: Final = 4000


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
    """A job this worker holds a lease on; (id, locked_by, attempt) fence every update.

    Built by the claim's row factory from its RETURNING columns, by name.
    """

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


def claimed_job_row(cursor: Cursor[Any]) -> RowMaker[ClaimedJob]:
    """Row factory: a ClaimedJob from each row, its fields found by column name.

    Like psycopg's class_row, but the names are matched once per result and each
    row is then picked by position: a claim builds thousands of these a second,
    and class_row's per-row keyword dict cost measurably more.
    """
    columns = [column.name for column in cursor.description or ()]
    pick = operator.itemgetter(*(columns.index(f.name) for f in fields(ClaimedJob)))
    return lambda values: ClaimedJob(*pick(values))


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

# The one dedup rule, shared by every enqueue statement below. The partial unique
# index background_jobs_dedup_in_flight arbitrates concurrent enqueuers: ON
# CONFLICT waits for an in-progress insert of the same key and then does nothing,
# so there is no check-then-insert race, and a key is free again once its job
# leaves pending/processing.
ON_DEDUP_CONFLICT: Final = sql.SQL(
    "ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'processing')\n"
    "    DO NOTHING"
)

# stride_notify_jobs() runs only when a row was inserted; the notification is
# delivered at commit, together with the jobs it announces.
ENQUEUE_SQL: Final = sql.SQL("""
WITH inserted AS (
    INSERT INTO background_jobs
        (job_type, payload, user_id, priority, max_retries, dedup_key, scheduled_for)
    VALUES (%s, %s, %s, %s, %s, %s, coalesce(%s, now()))
    {on_conflict}
    RETURNING id, job_type
)
SELECT id, stride_notify_jobs(job_type) FROM inserted
""").format(on_conflict=ON_DEDUP_CONFLICT)

FIND_IN_FLIGHT_SQL: Final = """
SELECT id FROM background_jobs
WHERE dedup_key = %s AND status IN ('pending', 'processing')
"""

# Inserts whatever `{rows}` yields (the named columns) in one statement, skipping
# keys in flight, and notifies once: with the job type when all inserted rows
# share one, else with NOTIFY_ANY_TYPE. Returns the number inserted. The rows
# go in in the order `{rows}` yields them (a subquery with ORDER BY keeps it).
_INSERT_ROWS_TEMPLATE: Final = """
WITH inserted AS (
    INSERT INTO background_jobs ({columns})
    SELECT {columns} FROM ({rows}) AS new_jobs
    {on_conflict}
    RETURNING job_type
),
summary AS (
    SELECT count(*) AS jobs, min(job_type) AS first_type, max(job_type) AS last_type
    FROM inserted
)
SELECT jobs,
       CASE WHEN jobs > 0 THEN stride_notify_jobs(
           CASE WHEN first_type = last_type THEN first_type ELSE {any_type} END
       ) END
FROM summary
"""

# What a query given to enqueue_from_query must yield, by name; it may also yield
# any of OPTIONAL_QUERY_COLUMNS when it names them.
QUERY_COLUMNS: Final = ("job_type", "payload", "user_id", "priority", "dedup_key")
OPTIONAL_QUERY_COLUMNS: Final = ("max_retries", "scheduled_for")


def insert_rows_sql(rows: sql.Composable, columns: Sequence[str]) -> sql.Composed:
    """The set-based enqueue statement around a query that yields `columns`."""
    return sql.SQL(_INSERT_ROWS_TEMPLATE).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        rows=rows,
        on_conflict=ON_DEDUP_CONFLICT,
        any_type=sql.Literal(NOTIFY_ANY_TYPE),
    )


# enqueue_many's rows: the arrays unnested in parallel, in-batch duplicates of a
# dedup key dropped (the first one wins).
_UNNEST_NEW_JOBS: Final = sql.SQL("""
    SELECT job_type, payload::jsonb AS payload, user_id, priority, max_retries, dedup_key,
           coalesce(scheduled_for, now()) AS scheduled_for
    FROM (
        SELECT t.*, row_number() OVER (PARTITION BY t.dedup_key ORDER BY t.ord) AS key_rank
        FROM unnest(
            %s::text[], %s::text[], %s::uuid[], %s::int[], %s::int[], %s::text[],
            %s::timestamptz[]
        ) WITH ORDINALITY
            AS t(job_type, payload, user_id, priority, max_retries, dedup_key, scheduled_for, ord)
    ) AS numbered
    WHERE dedup_key IS NULL OR key_rank = 1
    ORDER BY ord
""")
ENQUEUE_MANY_SQL: Final = insert_rows_sql(
    _UNNEST_NEW_JOBS,
    (*QUERY_COLUMNS, "max_retries", "scheduled_for"),
)

NOTIFY_SQL: Final = "SELECT stride_notify_jobs(%s)"


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
        assert job.dedup_key is not None  # only a dedup key can make the insert a no-op
        existing = find_in_flight(conn, job.dedup_key)
        if existing is not None:
            return EnqueueResult(existing, inserted=False)
        # The holder of the key finished between our insert and our look-up: the
        # key is free again, so try to insert once more.


def find_in_flight(conn: DbConnection, dedup_key: str) -> int | None:
    """The id of the pending-or-processing job holding `dedup_key`, if any (a plain read)."""
    row = conn.execute(FIND_IN_FLIGHT_SQL, (dedup_key,)).fetchone()
    return int(row[0]) if row is not None else None


def enqueue_many(conn: DbConnection, jobs: Sequence[NewJob]) -> int:
    """Insert many jobs in one statement, skipping in-flight dedup keys; returns the count."""
    if not jobs:
        return 0
    row = conn.execute(
        ENQUEUE_MANY_SQL,
        (
            [j.job_type for j in jobs],
            [json.dumps(j.payload, separators=(",", ":")) for j in jobs],
            [j.user_id for j in jobs],
            [j.priority for j in jobs],
            [j.max_retries for j in jobs],
            [j.dedup_key for j in jobs],
            [j.scheduled_for for j in jobs],
        ),
    ).fetchone()
    return int(row[0]) if row else 0


def enqueue_from_query(
    conn: DbConnection,
    query: sql.Composable,
    params: Mapping[str, Any],
    *,
    optional_columns: Sequence[str] = (),
) -> int:
    """Enqueue every row `query` yields, in one statement; returns how many were inserted.

    `query` is a SELECT yielding the columns of QUERY_COLUMNS by name (`payload`
    as jsonb), plus those of `optional_columns` (e.g. `scheduled_for`, to make
    jobs due later); rows whose dedup key is in flight are skipped. The rows are
    not sent to the client and back: the database inserts straight from the query.
    """
    unknown = set(optional_columns) - set(OPTIONAL_QUERY_COLUMNS)
    if unknown:
        raise ValueError(f"enqueue_from_query: unknown optional columns {sorted(unknown)}")
    columns = (*QUERY_COLUMNS, *optional_columns)
    row = conn.execute(insert_rows_sql(query, columns), params).fetchone()
    return int(row[0]) if row else 0


# --- claim -----------------------------------------------------------------------------------

# stride_claimable_jobs (migration 0014) picks the ids: due pending jobs in
# claim order, FOR UPDATE SKIP LOCKED, so concurrent workers each lock a disjoint
# set without waiting on one another; the locks last only for this statement's
# transaction, after which status = 'processing' keeps other claimers away. The
# ids come from an ARRAY(...) init plan, evaluated exactly once (a semi-join could
# re-run a LIMIT subquery), and the UPDATE finds them by primary key. RETURNING
# names the fields of ClaimedJob.
CLAIM_SQL: Final = """
UPDATE background_jobs
SET status = 'processing',
    attempt = attempt + 1,
    started_at = clock_timestamp(),
    locked_by = %(worker_id)s,
    locked_until = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
WHERE id = ANY(ARRAY(SELECT stride_claimable_jobs(%(batch_size)s, %(job_types)s::text[])))
RETURNING id, job_type, payload, user_id, priority, attempt, max_retries, locked_by,
          locked_until, dedup_key, scheduled_for, created_at, error_message
"""


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
        "job_types": None if job_types is None else list(job_types),
    }
    # Never a prepared statement (prepare=False): planned afresh on every claim
    # (well under a millisecond). Prepared, the driver's fifth execution made it
    # a server-side statement, and PostgreSQL then kept a generic plan built
    # while background_jobs was empty by its statistics (a fresh queue, or
    # TRUNCATE + ANALYZE): a sequential scan and sort of the whole table for the
    # ids, and another for the UPDATE, on every claim, for as long as the
    # session lived — nothing invalidates it until the table is analyzed again.
    # That made one 100k backfill run 3-4x slower than the next, depending on
    # whether a runner had claimed five times before the fan-out filled the table.
    # (The ids' own query has a fixed plan, see stride_claimable_jobs.)
    with conn.cursor(row_factory=claimed_job_row) as cursor:
        jobs = cursor.execute(CLAIM_SQL, params, prepare=False).fetchall()
    # RETURNING follows no order; hand jobs out in claim order.
    jobs.sort(key=lambda j: (-j.priority, j.scheduled_for, j.id))
    return jobs


# --- fenced transitions ----------------------------------------------------------------------

# Fenced by (id, attempt) pairs plus the lease owner: a job whose lease was taken
# over has a newer attempt or another owner, and is left alone. The row locks
# taken here are held until the caller's transaction (the handler's) commits.
#
# The pairs travel as one jsonb object, job id -> attempt (FENCE), looked up per
# row: jsonb keeps an object's keys sorted, so each lookup is a binary search.
# Joined to unnest() of the pairs instead, the planner (whose statistics rarely
# know how many jobs are processing) chose a nested loop that re-read the whole
# array for every row: 250,000 comparisons and 54 of 62 ms for a batch of 500.
# The rows themselves are found by primary key (`j.id = ANY(ids)`).
#
# The array-driven statements below run unprepared (prepare=False): a generic
# plan cannot see the array's length, and measured 15x slower than the custom
# plan for a batch of 1000; planning costs well under a millisecond.
FENCE: Final = "j.attempt = (%(fence)s::jsonb ->> j.id::text)::int"

COMPLETE_SQL: Final = f"""
UPDATE background_jobs AS j
SET status = 'completed', completed_at = clock_timestamp(), locked_until = NULL
WHERE j.id = ANY(%(ids)s::bigint[]) AND {FENCE}
  AND j.status = 'processing' AND j.locked_by = %(owner)s
RETURNING j.id
"""

# One job: a plain statement the driver prepares once, where the array form
# above would be planned afresh on every call.
COMPLETE_ONE_SQL: Final = """
UPDATE background_jobs
SET status = 'completed', completed_at = clock_timestamp(), locked_until = NULL
WHERE id = %s AND attempt = %s AND status = 'processing' AND locked_by = %s
RETURNING id
"""

# A failure also appends to the job's error history (`stride jobs show`); only
# failure paths write it, so the completion path pays nothing for it.
FAIL_SQL: Final = """
UPDATE background_jobs
SET status = CASE WHEN attempt > max_retries THEN 'dead' ELSE 'pending' END,
    error_message = %(error)s,
    error_history = stride_append_error(error_history, jsonb_build_object(
        'attempt', attempt, 'at', clock_timestamp(), 'error', %(error)s::text, 'worker', locked_by,
        'outcome', CASE WHEN attempt > max_retries THEN 'dead' ELSE 'retry' END)),
    scheduled_for = CASE WHEN attempt > max_retries THEN scheduled_for
                         ELSE clock_timestamp() + make_interval(secs => %(delay)s) END,
    completed_at = CASE WHEN attempt > max_retries THEN clock_timestamp() END,
    locked_until = NULL
WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'processing' AND locked_by = %(owner)s
RETURNING status
"""

# Ends a held job without success and without retries: `dead` (nothing can run
# it, e.g. no handler), `failed` (its handler declared it hopeless) or
# `cancelled` (its handler found its work cancelled).
GIVE_UP_SQL: Final = """
UPDATE background_jobs
SET status = %(status)s, error_message = %(error)s, completed_at = clock_timestamp(),
    error_history = stride_append_error(error_history, jsonb_build_object(
        'attempt', attempt, 'at', clock_timestamp(), 'error', %(error)s::text, 'worker', locked_by,
        'outcome', %(status)s::text)),
    locked_until = NULL
WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'processing' AND locked_by = %(owner)s
"""

# Back to pending without spending an attempt: the claim's increment is undone.
# %(delays)s maps job id -> seconds until due again, like the fence.
DEFER_SQL: Final = f"""
UPDATE background_jobs AS j
SET status = 'pending', attempt = j.attempt - 1, locked_by = NULL, locked_until = NULL,
    scheduled_for = clock_timestamp()
                    + make_interval(secs => (%(delays)s::jsonb ->> j.id::text)::float8)
WHERE j.id = ANY(%(ids)s::bigint[]) AND {FENCE}
  AND j.status = 'processing' AND j.locked_by = %(owner)s
RETURNING j.id
"""

# Like DEFER_SQL but keeps scheduled_for, so a released job keeps its place in line.
RELEASE_SQL: Final = f"""
UPDATE background_jobs AS j
SET status = 'pending', attempt = j.attempt - 1, locked_by = NULL, locked_until = NULL
WHERE j.id = ANY(%(ids)s::bigint[]) AND {FENCE}
  AND j.status = 'processing' AND j.locked_by = %(owner)s
RETURNING j.id
"""

# Lease rows locked by another transaction are skipped rather than waited on:
# they are being completed or reclaimed right now, so extending them is moot.
EXTEND_LEASE_SQL: Final = f"""
UPDATE background_jobs AS j
SET locked_until = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
WHERE j.id = ANY(ARRAY(
      SELECT id FROM background_jobs
      WHERE id = ANY(%(ids)s::bigint[])
      FOR UPDATE SKIP LOCKED
  ))
  AND {FENCE} AND j.status = 'processing' AND j.locked_by = %(owner)s
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
        "fence": _by_id(jobs, [j.attempt for j in jobs]),
        "owner": _single_owner(jobs),
    }
    rows = conn.execute(statement, params, prepare=False)
    return {r[0] for r in rows.fetchall()}


def _by_id(jobs: Sequence[ClaimedJob], values: Sequence[int | float]) -> str:
    """A jsonb object (as text) mapping each job's id to its value, for FENCE and the delays."""
    return orjson.dumps({str(j.id): v for j, v in zip(jobs, values, strict=True)}).decode()


def _single_owner(jobs: Sequence[ClaimedJob]) -> str:
    owners = {j.locked_by for j in jobs}
    if len(owners) != 1:
        raise ValueError(f"jobs from several lease owners in one call: {sorted(owners)}")
    return owners.pop()


def complete_many(conn: DbConnection, jobs: Sequence[ClaimedJob]) -> set[int]:
    """Mark held jobs completed in one statement; returns the ids still ours (others were lost)."""
    if len(jobs) == 1:
        [job] = jobs
        rows = conn.execute(COMPLETE_ONE_SQL, (job.id, job.attempt, job.locked_by)).fetchall()
        return {r[0] for r in rows}
    return _fenced_update(conn, COMPLETE_SQL, jobs)


def complete(conn: DbConnection, job: ClaimedJob) -> bool:
    """Mark one held job completed; False when the lease was lost (nothing changed)."""
    return bool(complete_many(conn, [job]))


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
    params = {
        "error": truncate_error(error),
        "delay": delay,
        "id": job.id,
        "attempt": job.attempt,
        "owner": job.locked_by,
    }
    row = conn.execute(FAIL_SQL, params).fetchone()
    if row is None:
        return FailOutcome.LOST
    return FailOutcome.DEAD if row[0] == "dead" else FailOutcome.RETRY


def _give_up(conn: DbConnection, job: ClaimedJob, status: str, reason: str) -> bool:
    cursor = conn.execute(
        GIVE_UP_SQL,
        {
            "status": status,
            "error": truncate_error(reason),
            "id": job.id,
            "attempt": job.attempt,
            "owner": job.locked_by,
        },
    )
    return cursor.rowcount == 1


def mark_dead(conn: DbConnection, job: ClaimedJob, reason: str) -> bool:
    """Give up on a held job that nothing can run (e.g. no handler); False when lost."""
    return _give_up(conn, job, "dead", reason)


def mark_failed(conn: DbConnection, job: ClaimedJob, reason: str) -> bool:
    """End a held job `failed` at once, no retries (its handler said retrying cannot help)."""
    return _give_up(conn, job, "failed", reason)


def mark_cancelled(conn: DbConnection, job: ClaimedJob, reason: str) -> bool:
    """End a held job `cancelled` (its handler found the work it belongs to cancelled)."""
    return _give_up(conn, job, "cancelled", reason)


def defer_many(conn: DbConnection, jobs: Sequence[ClaimedJob], delays: Sequence[float]) -> set[int]:
    """Return held jobs to pending after per-job delays without spending an attempt."""
    return _fenced_update(conn, DEFER_SQL, jobs, delays=_by_id(jobs, [float(d) for d in delays]))


def defer(conn: DbConnection, job: ClaimedJob, delay_seconds: float) -> bool:
    """Return a held job to pending after `delay_seconds` without spending an attempt."""
    return bool(defer_many(conn, [job], [delay_seconds]))


def release(conn: DbConnection, jobs: Sequence[ClaimedJob]) -> set[int]:
    """Hand back claimed-but-unstarted jobs, keeping their place in line and their attempts."""
    return _fenced_update(conn, RELEASE_SQL, jobs)


def extend_lease(conn: DbConnection, jobs: Sequence[ClaimedJob], lease_seconds: float) -> set[int]:
    """Push the lease of held jobs `lease_seconds` into the future; returns the ids still ours."""
    return _fenced_update(conn, EXTEND_LEASE_SQL, jobs, lease_seconds=float(lease_seconds))


# --- operator actions ------------------------------------------------------------------------

# Pending jobs of the given types whose payload names `source`. Jobs a worker
# holds are left to finish. The subquery locks the rows FOR UPDATE in id order
# (ORDER BY sits below the row locking), so two cancels of one source take their
# locks in the same order and cannot deadlock; a row a claimer has locked right
# now is waited for, then re-checked: if the claim committed it is processing
# and is skipped. SKIP LOCKED would leave such rows pending behind our back.
CANCEL_PENDING_SQL: Final = """
UPDATE background_jobs AS j
SET status = 'cancelled', completed_at = clock_timestamp(), error_message = %(reason)s
FROM (
    SELECT id FROM background_jobs
    WHERE job_type = ANY(%(job_types)s::text[])
      AND payload ->> 'source' = %(source)s
      AND status = 'pending'
    ORDER BY id
    FOR UPDATE
) AS doomed
WHERE j.id = doomed.id
"""

# Revive dead and failed jobs with a fresh set of attempts. A dedup key already
# in flight (or revived twice) would break the unique index, so only the newest
# given-up job per key is revived, and only while the key is free.
RETRY_GIVEN_UP_SQL: Final = """
WITH revivable AS (
    SELECT DISTINCT ON (coalesce(d.dedup_key, d.id::text)) d.id
    FROM background_jobs AS d
    WHERE d.status IN ('dead', 'failed')
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


# One given-up job back to pending, under the same rule as RETRY_GIVEN_UP_SQL:
# only while its dedup key (if any) is free. RETURNING the type for the notification.
RETRY_ONE_GIVEN_UP_SQL: Final = """
UPDATE background_jobs AS j
SET status = 'pending', attempt = 0, scheduled_for = now(), completed_at = NULL,
    locked_by = NULL, locked_until = NULL
WHERE j.id = %(id)s AND j.status IN ('dead', 'failed')
  AND (j.dedup_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM background_jobs AS f
      WHERE f.dedup_key = j.dedup_key AND f.status IN ('pending', 'processing')
  ))
RETURNING j.job_type
"""


def cancel_pending(
    conn: DbConnection,
    job_types: Sequence[str],
    source: str,
    *,
    reason: str = "cancelled by operator",
) -> int:
    """Cancel the pending jobs of `job_types` whose payload's source is `source`; returns count."""
    params = {"job_types": list(job_types), "source": source, "reason": reason}
    return conn.execute(CANCEL_PENDING_SQL, params).rowcount


def retry_dead(conn: DbConnection, job_type: str | None = None) -> int:
    """Put dead and failed jobs (optionally of one type) back to pending with fresh attempts."""
    with conn.transaction():
        count = conn.execute(RETRY_GIVEN_UP_SQL, {"job_type": job_type}).rowcount
        if count:
            conn.execute(NOTIFY_SQL, (job_type or NOTIFY_ANY_TYPE,))
    return count


def retry_job(conn: DbConnection, job_id: int) -> bool:
    """Put one dead or failed job back to pending with fresh attempts.

    False when the job is not dead or failed (any more), or when another job
    with its dedup key is in flight (retrying it would run the same work twice).
    """
    try:
        with conn.transaction():
            row = conn.execute(RETRY_ONE_GIVEN_UP_SQL, {"id": job_id}).fetchone()
            if row is None:
                return False
            conn.execute(NOTIFY_SQL, (row[0],))
    except errors.UniqueViolation:
        # Its key was enqueued afresh between the check and the update: the
        # unique index refused the second in-flight job, as it should.
        return False
    return True
