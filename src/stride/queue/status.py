"""The operator's view of the queue: what is waiting, what is stuck, what died and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from stride.storage.connection import DbConnection

COUNTS_SQL = """
SELECT job_type, status, count(*) FROM background_jobs GROUP BY job_type, status
ORDER BY job_type, status
"""

OLDEST_DUE_SQL = """
SELECT extract(epoch FROM now() - min(scheduled_for))::float8
FROM background_jobs
WHERE status = 'pending' AND scheduled_for <= now()
"""

EXPIRED_LEASES_SQL = """
SELECT count(*) FROM background_jobs WHERE status = 'processing' AND locked_until < now()
"""

# Jobs that ended without success: dead (attempts exhausted, no handler) or
# failed (the handler declared them hopeless); index background_jobs_given_up.
LATEST_DEAD_SQL = """
SELECT id, job_type, status, attempt, error_message, completed_at
FROM background_jobs
WHERE status IN ('dead', 'failed')
ORDER BY completed_at DESC, id DESC
LIMIT %s
"""


@dataclass(frozen=True, slots=True)
class DeadJob:
    """A job that ended without success; `status` is dead or failed."""

    id: int
    job_type: str
    status: str
    attempt: int
    error_message: str | None
    died_at: datetime | None


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Counts by (job type, status), oldest due pending age, stuck leases, recent deaths.

    `latest_dead` holds the latest dead and failed jobs alike.
    """

    counts: list[tuple[str, str, int]]
    oldest_due_pending_seconds: float | None
    expired_leases: int
    latest_dead: list[DeadJob]

    def to_json(self) -> dict[str, Any]:
        by_type: dict[str, dict[str, int]] = {}
        for job_type, status, count in self.counts:
            by_type.setdefault(job_type, {})[status] = count
        return {
            "counts": by_type,
            "oldest_due_pending_seconds": self.oldest_due_pending_seconds,
            "expired_leases": self.expired_leases,
            "latest_dead": [asdict(d) for d in self.latest_dead],
        }


def queue_status(conn: DbConnection, *, dead_limit: int = 10) -> QueueStatus:
    """Read the queue's state (plain reads: no locks beyond what any SELECT takes)."""
    counts = [(r[0], r[1], int(r[2])) for r in conn.execute(COUNTS_SQL).fetchall()]
    oldest = conn.execute(OLDEST_DUE_SQL).fetchone()
    expired = conn.execute(EXPIRED_LEASES_SQL).fetchone()
    dead = [DeadJob(*row) for row in conn.execute(LATEST_DEAD_SQL, (dead_limit,)).fetchall()]
    return QueueStatus(
        counts=counts,
        oldest_due_pending_seconds=oldest[0] if oldest else None,
        expired_leases=int(expired[0]) if expired else 0,
        latest_dead=dead,
    )


# --- the dashboard's queue views ------------------------------------------------------------

# Counts by type, status and priority: one pass over the table (a sequential
# scan; the dashboard reads it from a snapshot refreshed in the background).
COUNTS_BY_PRIORITY_SQL = """
SELECT job_type, status, priority, count(*)
FROM background_jobs
GROUP BY job_type, status, priority
ORDER BY job_type, status, priority DESC
"""

# Who holds leases now: processing rows only (partial index background_jobs_lease).
LEASE_HOLDERS_SQL = """
SELECT locked_by, count(*), min(started_at), min(locked_until),
       count(*) FILTER (WHERE locked_until < now())
FROM background_jobs
WHERE status = 'processing'
GROUP BY locked_by
ORDER BY min(started_at), locked_by
"""

# The latest jobs that ended without success, with what an operator needs to
# judge a retry (index background_jobs_given_up, newest first).
GIVEN_UP_JOBS_SQL = """
SELECT id, job_type, status, attempt, max_retries, error_message, payload, user_id,
       created_at, completed_at
FROM background_jobs
WHERE status IN ('dead', 'failed')
ORDER BY completed_at DESC, id DESC
LIMIT %(limit)s
"""

GIVEN_UP_COUNTS_SQL = """
SELECT job_type, status, count(*)
FROM background_jobs
WHERE status IN ('dead', 'failed')
GROUP BY job_type, status
ORDER BY job_type, status
"""

# Completed jobs per time bucket since `since`, read through the partial index
# background_jobs_completed_at: the cost follows the completions in the window,
# not the table. date_bin buckets start at whole multiples of the bucket width.
COMPLETIONS_SQL = """
SELECT date_bin(make_interval(secs => %(bucket)s), completed_at,
                TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket_start,
       job_type, count(*), count(DISTINCT user_id)
FROM background_jobs
WHERE status = 'completed' AND completed_at >= %(since)s
GROUP BY 1, 2
ORDER BY 1, 2
"""

# The same for one backfill source's fan-out jobs.
SOURCE_COMPLETIONS_SQL = """
SELECT date_bin(make_interval(secs => %(bucket)s), completed_at,
                TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket_start,
       job_type, count(*), count(DISTINCT user_id)
FROM background_jobs
WHERE status = 'completed' AND completed_at >= %(since)s
  AND job_type = 'projection.update' AND payload ->> 'source' = %(source)s
GROUP BY 1, 2
ORDER BY 1, 2
"""

DATABASE_NOW_SQL = "SELECT statement_timestamp()"

# One user's unsettled and given-up jobs: pending through background_jobs_user_pending,
# processing and given-up through the small partial indexes on those statuses.
USER_JOBS_SQL = """
(SELECT id, job_type, status, priority, attempt, max_retries, payload, error_message,
        created_at, scheduled_for, locked_by, completed_at
 FROM background_jobs WHERE user_id = %(user_id)s AND status = 'pending'
 ORDER BY id LIMIT %(limit)s)
UNION ALL
(SELECT id, job_type, status, priority, attempt, max_retries, payload, error_message,
        created_at, scheduled_for, locked_by, completed_at
 FROM background_jobs WHERE user_id = %(user_id)s AND status = 'processing'
 ORDER BY id LIMIT %(limit)s)
UNION ALL
(SELECT id, job_type, status, priority, attempt, max_retries, payload, error_message,
        created_at, scheduled_for, locked_by, completed_at
 FROM background_jobs WHERE user_id = %(user_id)s AND status IN ('dead', 'failed')
 ORDER BY id DESC LIMIT %(limit)s)
"""


@dataclass(frozen=True, slots=True)
class JobCount:
    job_type: str
    status: str
    priority: int
    count: int


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """One lease owner (a worker's runner) and the jobs it holds right now."""

    owner: str
    jobs: int
    oldest_started_at: datetime | None
    next_expiry: datetime | None
    expired: int


@dataclass(frozen=True, slots=True)
class GivenUpJob:
    """A dead or failed job with its payload and last error."""

    id: int
    job_type: str
    status: str
    attempt: int
    max_retries: int
    error_message: str | None
    payload: dict[str, Any]
    user_id: UUID | None
    created_at: datetime
    died_at: datetime | None


@dataclass(frozen=True, slots=True)
class QueueOverview:
    """Everything the dashboard's queue page shows, read in one go.

    `status` is what `stride jobs status` prints (its counts summed over priority).
    """

    status: QueueStatus
    counts: list[JobCount]
    lease_holders: list[LeaseHolder]
    given_up: list[GivenUpJob]
    given_up_counts: list[tuple[str, str, int]]


@dataclass(frozen=True, slots=True)
class CompletionBucket:
    start: datetime
    job_type: str
    jobs: int
    users: int  # distinct users among the bucket's jobs


@dataclass(frozen=True, slots=True)
class Completions:
    """Completed jobs per bucket from `since` up to `observed_at` (the database's clock)."""

    since: datetime
    observed_at: datetime
    bucket_seconds: float
    buckets: list[CompletionBucket]


@dataclass(frozen=True, slots=True)
class UserJob:
    id: int
    job_type: str
    status: str
    priority: int
    attempt: int
    max_retries: int
    payload: dict[str, Any]
    error_message: str | None
    created_at: datetime
    scheduled_for: datetime
    locked_by: str | None
    completed_at: datetime | None


def _summed(counts: list[JobCount]) -> list[tuple[str, str, int]]:
    totals: dict[tuple[str, str], int] = {}
    for c in counts:
        totals[(c.job_type, c.status)] = totals.get((c.job_type, c.status), 0) + c.count
    return [(t, s, n) for (t, s), n in sorted(totals.items())]


def queue_overview(conn: DbConnection, *, given_up_limit: int = 50) -> QueueOverview:
    """The queue status plus priorities, lease holders and given-up jobs (plain reads)."""
    counts = [
        JobCount(r[0], r[1], int(r[2]), int(r[3])) for r in conn.execute(COUNTS_BY_PRIORITY_SQL)
    ]
    oldest = conn.execute(OLDEST_DUE_SQL).fetchone()
    expired = conn.execute(EXPIRED_LEASES_SQL).fetchone()
    given_up = [
        GivenUpJob(*row) for row in conn.execute(GIVEN_UP_JOBS_SQL, {"limit": given_up_limit})
    ]
    status = QueueStatus(
        counts=_summed(counts),
        oldest_due_pending_seconds=oldest[0] if oldest else None,
        expired_leases=int(expired[0]) if expired else 0,
        latest_dead=[
            DeadJob(j.id, j.job_type, j.status, j.attempt, j.error_message, j.died_at)
            for j in given_up[:10]
        ],
    )
    holders = [
        LeaseHolder(r[0] or "?", int(r[1]), r[2], r[3], int(r[4]))
        for r in conn.execute(LEASE_HOLDERS_SQL)
    ]
    given_up_counts = [(r[0], r[1], int(r[2])) for r in conn.execute(GIVEN_UP_COUNTS_SQL)]
    return QueueOverview(status, counts, holders, given_up, given_up_counts)


def completions(
    conn: DbConnection, since: datetime, bucket_seconds: float, *, source: str | None = None
) -> Completions:
    """Completed jobs per `bucket_seconds` since `since`, by job type (of one backfill source's
    fan-out when `source` is given). Buckets after `observed_at - a few seconds` may still
    grow: a transaction that completed jobs commits a moment after stamping them."""
    now_row = conn.execute(DATABASE_NOW_SQL).fetchone()
    assert now_row is not None
    params = {"since": since, "bucket": float(bucket_seconds), "source": source}
    query = COMPLETIONS_SQL if source is None else SOURCE_COMPLETIONS_SQL
    buckets = [
        CompletionBucket(r[0], r[1], int(r[2]), int(r[3])) for r in conn.execute(query, params)
    ]
    return Completions(since, now_row[0], float(bucket_seconds), buckets)


def user_jobs(conn: DbConnection, user_id: UUID, *, limit: int = 50) -> list[UserJob]:
    """A user's pending, processing, dead and failed jobs (up to `limit` of each)."""
    rows = conn.execute(USER_JOBS_SQL, {"user_id": user_id, "limit": limit}).fetchall()
    return [UserJob(*row) for row in rows]
