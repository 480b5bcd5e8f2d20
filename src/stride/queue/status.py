"""The operator's view of the queue: what is waiting, what is stuck, what died and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final
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


# --- operator views: workers, job lists, one job (stride workers, jobs list/show) ------------

# How a job's status is shown: a pending job that already failed an attempt is
# waiting for its retry (its backoff), which the views call `retrying`. Display
# only: the stored status stays `pending` (the runbook's SQL counts it so). The
# rule is this one predicate; the statements below are composed from these
# constants (SQL text only, never values).
AFTER_A_FAILURE_SQL: Final = "attempt > 0 AND error_message IS NOT NULL"
SHOWN_STATUS_SQL: Final = (
    f"CASE WHEN status = 'pending' AND {AFTER_A_FAILURE_SQL} THEN 'retrying' ELSE status END"
)
# Statuses a job can be shown with, in lifecycle order.
SHOWN_STATUSES: Final = (
    "pending",
    "retrying",
    "processing",
    "completed",
    "failed",
    "dead",
    "cancelled",
)

# Every worker's heartbeat row, as the database's clock sees it.
HEARTBEATS_SQL: Final = """
SELECT worker_id, host, pid, concurrency, job_types, lease_seconds, started_at, heartbeat_at,
       extract(epoch FROM clock_timestamp() - heartbeat_at)::float8 AS silent_seconds
FROM worker_heartbeats
ORDER BY started_at, worker_id
"""

# Jobs in hand, per lease owner (a runner thread: `<worker id>/<n>`); walks the
# partial index background_jobs_lease, which holds processing rows only.
HELD_SQL: Final = """
SELECT locked_by, count(*), min(started_at),
       extract(epoch FROM clock_timestamp() - min(started_at))::float8, min(locked_until),
       bool_or(locked_until >= clock_timestamp())
FROM background_jobs
WHERE status = 'processing'
GROUP BY locked_by
"""

# Due pending jobs per type: what live workers should be claiming right now
# (background_jobs_claim holds pending rows only).
DUE_PENDING_SQL: Final = """
SELECT job_type, count(*)
FROM background_jobs
WHERE status = 'pending' AND scheduled_for <= now()
GROUP BY job_type
"""

_JOB_COLUMNS: Final = f"""
    id, job_type, {SHOWN_STATUS_SQL} AS shown_status, status, attempt, max_retries, priority,
    user_id, payload ->> 'source' AS source, created_at, scheduled_for, started_at, completed_at,
    locked_by, locked_until, error_message"""

# Newest first. Every filter is optional; a NULL parameter drops its condition
# (the planner folds it away, since the CLI's statements are planned with
# their values). `retrying` splits stored `pending` as SHOWN_STATUS_SQL does.
LIST_JOBS_SQL: Final = f"""
SELECT {_JOB_COLUMNS}
FROM background_jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(retrying)s::boolean IS NULL OR ({AFTER_A_FAILURE_SQL}) = %(retrying)s::boolean)
  AND (%(job_type)s::text IS NULL OR job_type = %(job_type)s::text)
  AND (%(source)s::text IS NULL OR payload ->> 'source' = %(source)s::text)
ORDER BY id DESC
LIMIT %(limit)s
"""

SHOW_JOB_SQL: Final = f"""
SELECT {_JOB_COLUMNS}, payload, dedup_key, coalesce(error_history, '[]'::jsonb)
FROM background_jobs
WHERE id = %(id)s
"""

# Waiting for a retry, per job type.
RETRYING_COUNTS_SQL: Final = f"""
SELECT job_type, count(*)
FROM background_jobs
WHERE status = 'pending' AND {AFTER_A_FAILURE_SQL}
GROUP BY job_type
ORDER BY job_type
"""


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A worker process: its heartbeat row (if it has one) and the jobs its runners hold.

    `live`: it beat within its lease (or, without a row, its leases are being
    kept). `registered` is False for a lease owner with no heartbeat row (a
    worker of an older stride, or one whose row was deleted).
    """

    worker_id: str
    host: str | None
    pid: int | None
    concurrency: int | None
    job_types: list[str] | None
    started_at: datetime | None
    last_heartbeat: datetime | None
    silent_seconds: float | None
    live: bool
    registered: bool
    jobs_in_hand: int = 0
    oldest_lease_started_at: datetime | None = None
    oldest_lease_seconds: float | None = None
    next_lease_expiry: datetime | None = None

    def claims(self, job_type: str) -> bool:
        return self.job_types is None or job_type in self.job_types

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HeldJobs:
    """What one lease owner (a runner thread) holds."""

    owner: str
    jobs: int
    oldest_started_at: datetime | None
    oldest_held_seconds: float | None
    next_lease_expiry: datetime | None
    any_lease_current: bool


@dataclass(frozen=True, slots=True)
class WorkersReport:
    """Live and silent workers, and the due jobs no live worker will claim."""

    workers: list[WorkerView]
    due_pending: dict[str, int]

    @property
    def live(self) -> list[WorkerView]:
        return [w for w in self.workers if w.live]

    @property
    def unclaimed(self) -> dict[str, int]:
        """Due pending jobs, per type, that no live worker claims (waiting for nobody)."""
        live = self.live
        return {
            job_type: count
            for job_type, count in sorted(self.due_pending.items())
            if count and not any(w.claims(job_type) for w in live)
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "workers": [w.as_dict() for w in self.workers],
            "live_workers": len(self.live),
            "due_pending_jobs": dict(sorted(self.due_pending.items())),
            "waiting_for_nobody": self.unclaimed,
        }


def owner_of(lease_owner: str, worker_ids: Sequence[str]) -> str | None:
    """The worker a lease owner (`<worker id>` or a runner's `<worker id>/<n>`) belongs to."""
    for worker_id in worker_ids:
        if lease_owner == worker_id or lease_owner.startswith(worker_id + "/"):
            return worker_id
    return None


def assemble_workers(
    heartbeats: Sequence[tuple[Any, ...]], held: Sequence[HeldJobs]
) -> list[WorkerView]:
    """Join heartbeat rows (HEARTBEATS_SQL) with the jobs each worker's runners hold.

    A lease owner matching no row is reported as a worker of its own, live while
    any of its leases is current (its lease keeper is extending them).
    """
    ids = [row[0] for row in heartbeats]
    by_worker: dict[str, list[HeldJobs]] = {}
    strays: dict[str, list[HeldJobs]] = {}
    for holding in held:
        worker_id = owner_of(holding.owner, ids)
        if worker_id is None:
            # Runners of one unregistered worker share the part before the last '/'.
            stray = holding.owner.rsplit("/", 1)[0] if "/" in holding.owner else holding.owner
            strays.setdefault(stray, []).append(holding)
        else:
            by_worker.setdefault(worker_id, []).append(holding)
    views = []
    for row in heartbeats:
        worker_id, host, pid, concurrency, job_types, lease_s, started, beat, silent = row
        owned = by_worker.get(worker_id, [])
        views.append(
            WorkerView(
                worker_id,
                host,
                pid,
                concurrency,
                list(job_types) if job_types is not None else None,
                started,
                beat,
                silent,
                live=silent is not None and silent <= lease_s,
                registered=True,
                **_held_totals(owned),
            )
        )
    for worker_id, owned in sorted(strays.items()):
        views.append(
            WorkerView(
                worker_id,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                live=any(h.any_lease_current for h in owned),
                registered=False,
                **_held_totals(owned),
            )
        )
    return views


def _held_totals(owned: Sequence[HeldJobs]) -> dict[str, Any]:
    starts = [h.oldest_started_at for h in owned if h.oldest_started_at is not None]
    ages = [h.oldest_held_seconds for h in owned if h.oldest_held_seconds is not None]
    expiries = [h.next_lease_expiry for h in owned if h.next_lease_expiry is not None]
    return {
        "jobs_in_hand": sum(h.jobs for h in owned),
        "oldest_lease_started_at": min(starts) if starts else None,
        "oldest_lease_seconds": max(ages) if ages else None,
        "next_lease_expiry": min(expiries) if expiries else None,
    }


def workers_report(conn: DbConnection) -> WorkersReport:
    """Every worker that beat recently or holds jobs, and the due jobs waiting for nobody."""
    heartbeats = conn.execute(HEARTBEATS_SQL).fetchall()
    held = [HeldJobs(*row) for row in conn.execute(HELD_SQL).fetchall()]
    due = {row[0]: int(row[1]) for row in conn.execute(DUE_PENDING_SQL).fetchall()}
    return WorkersReport(assemble_workers(heartbeats, held), due)


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One job as the views show it; `status` is the shown status (SHOWN_STATUS_SQL)."""

    id: int
    job_type: str
    status: str
    stored_status: str
    attempt: int
    max_retries: int
    priority: int
    user_id: UUID | None
    source: str | None
    created_at: datetime
    scheduled_for: datetime
    started_at: datetime | None
    completed_at: datetime | None
    locked_by: str | None
    locked_until: datetime | None
    error_message: str | None

    @property
    def attempts_allowed(self) -> int:
        return self.max_retries + 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class JobDetail:
    """A job with its payload and the history of its failed attempts (oldest first)."""

    job: JobSummary
    payload: dict[str, Any]
    dedup_key: str | None
    errors: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.job.as_dict(),
            "payload": self.payload,
            "dedup_key": self.dedup_key,
            "errors": self.errors,
        }


def list_jobs(
    conn: DbConnection,
    *,
    status: str | None = None,
    job_type: str | None = None,
    source: str | None = None,
    limit: int = 20,
) -> list[JobSummary]:
    """The newest jobs matching every filter given; `status` is a shown status."""
    if status is not None and status not in SHOWN_STATUSES:
        raise ValueError(f"unknown job status {status!r}")
    stored = "pending" if status == "retrying" else status
    retrying = {"retrying": True, "pending": False}.get(status or "")
    params = {
        "status": stored,
        "retrying": retrying,
        "job_type": job_type,
        "source": source,
        "limit": limit,
    }
    return [JobSummary(*row) for row in conn.execute(LIST_JOBS_SQL, params).fetchall()]


def show_job(conn: DbConnection, job_id: int) -> JobDetail | None:
    """One job with its payload and error history; None when there is no such job."""
    row = conn.execute(SHOW_JOB_SQL, {"id": job_id}).fetchone()
    if row is None:
        return None
    *summary, payload, dedup_key, errors = row
    return JobDetail(JobSummary(*summary), payload, dedup_key, list(errors))


def retrying_counts(conn: DbConnection) -> dict[str, int]:
    """How many jobs of each type wait for a retry after a failed attempt."""
    return {row[0]: int(row[1]) for row in conn.execute(RETRYING_COUNTS_SQL).fetchall()}


# Types of jobs that ended without success; the partial index background_jobs_given_up
# holds exactly those rows, so this never reads the whole queue.
GIVEN_UP_TYPES_SQL: Final = """
SELECT DISTINCT job_type FROM background_jobs WHERE status IN ('dead', 'failed') ORDER BY 1
"""


def given_up_job_types(conn: DbConnection) -> list[str]:
    """The job types that have dead or failed jobs (what `jobs retry --dead` could revive)."""
    return [row[0] for row in conn.execute(GIVEN_UP_TYPES_SQL).fetchall()]


# --- the dashboard's queue views ------------------------------------------------------------

# Counts by type, shown status (a pending job waiting for its retry counts as
# `retrying`, as in `stride jobs list`) and priority: one pass over the table (a
# sequential scan; the dashboard reads it from a snapshot refreshed in the background).
COUNTS_BY_PRIORITY_SQL: Final = f"""
SELECT job_type, {SHOWN_STATUS_SQL} AS shown_status, priority, count(*)
FROM background_jobs
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3 DESC
"""

# The latest jobs that ended without success, with what an operator needs to
# judge a retry (index background_jobs_given_up, newest first).
GIVEN_UP_JOBS_SQL: Final = """
SELECT id, job_type, status, attempt, max_retries, error_message, payload, user_id,
       created_at, completed_at
FROM background_jobs
WHERE status IN ('dead', 'failed')
ORDER BY completed_at DESC, id DESC
LIMIT %(limit)s
"""

GIVEN_UP_COUNTS_SQL: Final = """
SELECT job_type, status, count(*)
FROM background_jobs
WHERE status IN ('dead', 'failed')
GROUP BY job_type, status
ORDER BY job_type, status
"""

# Completed jobs per time bucket since `since`, read through the partial index
# background_jobs_completed_at: the cost follows the completions in the window,
# not the table. date_bin buckets start at whole multiples of the bucket width.
COMPLETIONS_SQL: Final = """
SELECT date_bin(make_interval(secs => %(bucket)s), completed_at,
                TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket_start,
       job_type, count(*), count(DISTINCT user_id)
FROM background_jobs
WHERE status = 'completed' AND completed_at >= %(since)s
GROUP BY 1, 2
ORDER BY 1, 2
"""

# The same for one backfill source's fan-out jobs.
SOURCE_COMPLETIONS_SQL: Final = """
SELECT date_bin(make_interval(secs => %(bucket)s), completed_at,
                TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket_start,
       job_type, count(*), count(DISTINCT user_id)
FROM background_jobs
WHERE status = 'completed' AND completed_at >= %(since)s
  AND job_type = 'projection.update' AND payload ->> 'source' = %(source)s
GROUP BY 1, 2
ORDER BY 1, 2
"""

DATABASE_NOW_SQL: Final = "SELECT statement_timestamp()"

# One user's unsettled and given-up jobs (shown statuses): pending through
# background_jobs_user_pending, processing and given-up through the small partial
# indexes on those statuses.
_USER_JOB_COLUMNS: Final = f"""id, job_type, {SHOWN_STATUS_SQL}, priority, attempt, max_retries,
        payload, error_message, created_at, scheduled_for, locked_by, completed_at"""
USER_JOBS_SQL: Final = f"""
(SELECT {_USER_JOB_COLUMNS}
 FROM background_jobs WHERE user_id = %(user_id)s AND status = 'pending'
 ORDER BY id LIMIT %(limit)s)
UNION ALL
(SELECT {_USER_JOB_COLUMNS}
 FROM background_jobs WHERE user_id = %(user_id)s AND status = 'processing'
 ORDER BY id LIMIT %(limit)s)
UNION ALL
(SELECT {_USER_JOB_COLUMNS}
 FROM background_jobs WHERE user_id = %(user_id)s AND status IN ('dead', 'failed')
 ORDER BY id DESC LIMIT %(limit)s)
"""


@dataclass(frozen=True, slots=True)
class JobCount:
    job_type: str
    status: str  # the shown status (retrying split from pending)
    priority: int
    count: int


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
    """Everything the dashboard's queue page shows, read in one go: counts by type, shown
    status and priority, `stride jobs status`'s oldest due pending age and expired leases,
    `stride workers`' report, and the latest given-up jobs with their payloads."""

    counts: list[JobCount]
    oldest_due_pending_seconds: float | None
    expired_leases: int
    workers: WorkersReport
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
    status: str  # the shown status: pending, retrying, processing, dead or failed
    priority: int
    attempt: int
    max_retries: int
    payload: dict[str, Any]
    error_message: str | None
    created_at: datetime
    scheduled_for: datetime
    locked_by: str | None
    completed_at: datetime | None


def queue_overview(conn: DbConnection, *, given_up_limit: int = 50) -> QueueOverview:
    """The queue page's reads (plain reads: no locks beyond what any SELECT takes)."""
    counts = [
        JobCount(r[0], r[1], int(r[2]), int(r[3])) for r in conn.execute(COUNTS_BY_PRIORITY_SQL)
    ]
    oldest = conn.execute(OLDEST_DUE_SQL).fetchone()
    expired = conn.execute(EXPIRED_LEASES_SQL).fetchone()
    given_up = [
        GivenUpJob(*row) for row in conn.execute(GIVEN_UP_JOBS_SQL, {"limit": given_up_limit})
    ]
    given_up_counts = [(r[0], r[1], int(r[2])) for r in conn.execute(GIVEN_UP_COUNTS_SQL)]
    return QueueOverview(
        counts=counts,
        oldest_due_pending_seconds=oldest[0] if oldest else None,
        expired_leases=int(expired[0]) if expired else 0,
        workers=workers_report(conn),
        given_up=given_up,
        given_up_counts=given_up_counts,
    )


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
