"""Verification: the runbook's four reports plus run progress and a completeness verdict."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from stride.projections.registry import HANDLERS
from stride.storage.connection import DbConnection
from stride.storage.queries import load_queries

RUNBOOK_REPORTS = (
    ("backfill_controller_status", "Backfill controller job status"),
    ("backfill_fanout_status", "Fan-out projection.update status"),
    ("backfill_coverage", "Coverage"),
    ("backfill_lag", "Lag / freshness"),
)


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": [[_plain(v) for v in row] for row in self.rows],
        }


@dataclass(frozen=True, slots=True)
class RunProgress:
    """Where one backfill run stands, read in a few cheap queries."""

    job_id: int
    source: str
    controller_status: str
    users_total: int
    users_fanned_out: int
    jobs_enqueued: int
    users_with_both: int
    users_refreshed: int
    users_not_on_current_model: int
    job_counts: dict[str, int]
    created_at: datetime
    fanout_done: bool
    missing_sample: list[UUID] = field(default_factory=list)
    dead_sample: list[tuple[int, str, str | None, str | None]] = field(default_factory=list)

    @property
    def jobs_open(self) -> int:
        return self.job_counts.get("pending", 0) + self.job_counts.get("processing", 0)

    @property
    def drained(self) -> bool:
        """The controller finished fanning out and no fan-out job is still open."""
        return (
            self.fanout_done
            and self.controller_status not in ("pending", "processing")
            and (self.jobs_open == 0)
        )

    @property
    def given_up(self) -> int:
        """Fan-out jobs that ended without success: dead, or failed on an unusable payload."""
        return self.job_counts.get("dead", 0) + self.job_counts.get("failed", 0)

    @property
    def complete(self) -> bool:
        """Every snapshotted user has both surfaces and nothing of this source died or failed."""
        return (
            self.users_with_both == self.users_total
            and self.given_up == 0
            and self.controller_status == "completed"
        )

    def problems(self) -> list[str]:
        found = []
        if self.controller_status != "completed":
            found.append(f"controller job {self.job_id} is {self.controller_status}")
        missing = self.users_total - self.users_with_both
        if missing:
            sample = ", ".join(str(u) for u in self.missing_sample)
            found.append(f"{missing} snapshotted users lack a projection (e.g. {sample})")
        if self.job_counts.get("dead", 0):
            found.append(f"{self.job_counts['dead']} fan-out jobs are dead")
        if self.job_counts.get("failed", 0):
            found.append(f"{self.job_counts['failed']} fan-out jobs failed")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "source": self.source,
            "controller_status": self.controller_status,
            "users_total": self.users_total,
            "users_fanned_out": self.users_fanned_out,
            "jobs_enqueued": self.jobs_enqueued,
            "users_with_both_projections": self.users_with_both,
            "users_refreshed_since_trigger": self.users_refreshed,
            "users_not_on_current_model": self.users_not_on_current_model,
            "fanout_job_counts": self.job_counts,
            "created_at": self.created_at.isoformat(),
            "fanout_done": self.fanout_done,
            "complete": self.complete,
            "problems": self.problems(),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def current_model_versions() -> dict[tuple[str, str], str]:
    """The model version the running code stamps on each projection."""
    return {(t, k): v for handler in HANDLERS for t, k, v in handler.outputs}


def runbook_reports(
    conn: DbConnection, source: str, *, only: Collection[str] | None = None
) -> list[Report]:
    """The runbook's four verification queries, run as written with `source` bound.

    `only` names the reports wanted (all four by default): the two status
    reports read a source's jobs through an index, while coverage and lag read
    every event and take seconds on a large database.
    """
    queries = load_queries("runbook_reports.sql")
    reports = []
    for name, title in RUNBOOK_REPORTS:
        if only is not None and name not in only:
            continue
        cursor = conn.execute(queries[name], {"source": source})
        columns = [c.name for c in cursor.description or ()]
        reports.append(Report(name, title, columns, [list(r) for r in cursor.fetchall()]))
    return reports


def run_progress(conn: DbConnection, source: str, *, sample: int = 5) -> RunProgress | None:
    """The latest run of `source`, or None when it was never triggered."""
    queries = load_queries("backfill_progress.sql")
    run = conn.execute(queries["latest_run"], {"source": source}).fetchone()
    if run is None:
        return None
    (
        job_id,
        _,
        snapshot_id,
        users_total,
        next_position,
        jobs_enqueued,
        _,
        _,
        created_at,
        fanout_done_at,
        controller_status,
    ) = run
    models = current_model_versions()
    coverage = conn.execute(
        queries["snapshot_coverage"],
        {
            "snapshot_id": snapshot_id,
            "since": created_at,
            "state_model": models[("objective_state", "active")],
            "advisory_model": models[("objective_advisory", "overview")],
        },
    ).fetchone()
    with_both, refreshed, not_current = coverage or (0, 0, 0)
    counts = dict(conn.execute(queries["source_job_counts"], {"source": source}).fetchall())
    progress = RunProgress(
        job_id=job_id,
        source=source,
        controller_status=controller_status,
        users_total=users_total,
        users_fanned_out=min(next_position - 1, users_total),
        jobs_enqueued=jobs_enqueued,
        users_with_both=with_both,
        users_refreshed=refreshed,
        users_not_on_current_model=not_current,
        job_counts=counts,
        created_at=created_at,
        fanout_done=fanout_done_at is not None,
    )
    if with_both < users_total:
        rows = conn.execute(
            queries["missing_users_sample"], {"snapshot_id": snapshot_id, "limit": sample}
        ).fetchall()
        progress.missing_sample.extend(r[0] for r in rows)
    if progress.given_up:
        rows = conn.execute(
            queries["dead_jobs_sample"], {"source": source, "limit": sample}
        ).fetchall()
        progress.dead_sample.extend(tuple(r) for r in rows)
    return progress


def users_on_old_model(conn: DbConnection) -> int:
    """All users whose objective projections were computed by another model version."""
    models = current_model_versions()
    row = conn.execute(
        load_queries("backfill_progress.sql")["users_on_old_model"],
        {
            "state_model": models[("objective_state", "active")],
            "advisory_model": models[("objective_advisory", "overview")],
        },
    ).fetchone()
    return int(row[0]) if row else 0


# Every run, newest first, with its controller's status (LEFT JOIN: a pruned
# controller job leaves the run row behind). Index backfill_runs_source serves
# the per-source form; the whole table is one row per run.
RUN_HISTORY = """
SELECT r.job_id, r.source, r.created_at, r.users_total, r.jobs_enqueued, r.cancel_requested,
       r.fanout_done_at, c.status, clock_timestamp()
FROM backfill_runs r
LEFT JOIN background_jobs c ON c.id = r.job_id
WHERE %(source)s::text IS NULL OR r.source = %(source)s::text
ORDER BY r.created_at DESC, r.job_id DESC
LIMIT %(limit)s
"""

# Users per stored model version of each projection (a projection row is one user's).
MODEL_VERSION_COUNTS = """
SELECT projection_type, key, model_version, count(*)
FROM projections
GROUP BY projection_type, key, model_version
ORDER BY projection_type, key, model_version
"""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One past or current run, from its bookkeeping row (no per-job counting)."""

    job_id: int
    source: str
    created_at: datetime
    users_total: int
    jobs_enqueued: int
    cancel_requested: bool
    fanout_done_at: datetime | None
    controller_status: str | None  # None: the controller job was pruned
    observed_at: datetime

    @property
    def outcome(self) -> str:
        """cancelled, running (controller pending or processing), failed (controller dead or
        failed) or fanned-out; whether every user was refreshed is run_progress's to say."""
        if self.cancel_requested or self.controller_status == "cancelled":
            return "cancelled"
        if self.controller_status in ("pending", "processing"):
            return "running"
        if self.controller_status in ("dead", "failed"):
            return "failed"
        return "fanned-out"


DEFAULT_HISTORY_LIMIT = 50


def run_history(
    conn: DbConnection, source: str | None = None, *, limit: int = DEFAULT_HISTORY_LIMIT
) -> list[RunSummary]:
    """The latest `limit` runs, of `source` or of every source, newest first."""
    rows = conn.execute(RUN_HISTORY, {"source": source, "limit": limit}).fetchall()
    return [RunSummary(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class ModelVersionCount:
    projection_type: str
    key: str
    model_version: str | None
    users: int
    current: bool  # the version the running code writes


def model_version_counts(conn: DbConnection) -> list[ModelVersionCount]:
    """Users per stored model version of every projection, the running code's marked."""
    current = current_model_versions()
    return [
        ModelVersionCount(ptype, key, version, int(n), current.get((ptype, key)) == version)
        for ptype, key, version, n in conn.execute(MODEL_VERSION_COUNTS)
    ]


@dataclass(frozen=True, slots=True)
class BackfillStatus:
    """What `stride backfill status` shows: the runbook's reports, the run, stale users."""

    reports: list[Report]
    run: RunProgress | None  # None when the source was never triggered
    users_on_older_model_versions: int  # every user, including those created after the trigger


def backfill_status(conn: DbConnection, source: str) -> BackfillStatus:
    return BackfillStatus(
        reports=runbook_reports(conn, source),
        run=run_progress(conn, source),
        users_on_older_model_versions=users_on_old_model(conn),
    )


DrainProgress = Callable[[RunProgress], None]


def wait_until_drained(
    conn: DbConnection,
    source: str,
    *,
    timeout: float | None = None,
    on_progress: DrainProgress | None = None,
    poll_seconds: float = 1.0,
) -> RunProgress | None:
    """Poll the latest run of `source` until its fan-out has drained or `timeout` has passed.

    `conn` must be in autocommit mode, so every poll sees fresh rows. None when
    `source` was never triggered.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        progress = run_progress(conn, source)
        if progress is None:
            return None
        if on_progress is not None:
            on_progress(progress)
        if progress.drained or (deadline is not None and time.monotonic() > deadline):
            return progress
        time.sleep(poll_seconds)
