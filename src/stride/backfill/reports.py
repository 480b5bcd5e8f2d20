"""Verification: the runbook's four reports plus run progress and a completeness verdict."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from stride.backfill.revision_report import RevisionReport, revision_report
from stride.projections.registry import READ_MODELS, outputs_of
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


RunOutcome = Literal["running", "cancelled", "failed", "incomplete", "complete"]

IN_FLIGHT = ("pending", "processing")
GIVEN_UP = ("dead", "failed")


def run_outcome(
    *,
    controller_status: str | None,
    cancelled: bool,
    jobs_open: int,
    jobs_given_up: int,
    users_refreshed: int,
    users_total: int,
) -> RunOutcome:
    """What a run came to, by one rule for `backfill status` and `backfill history`.

    cancelled: an operator stopped it (whatever it had done by then);
    running: its controller or a fan-out job is pending or processing (a job
    waiting to retry after a failure is pending);
    failed: its controller or a fan-out job ended dead or failed;
    complete: every snapshotted user was refreshed after the trigger;
    incomplete: everything settled, yet some users were not refreshed.
    A missing controller status (the job was pruned) counts as settled.
    """
    if cancelled or controller_status == "cancelled":
        return "cancelled"
    if controller_status in IN_FLIGHT or jobs_open:
        return "running"
    if controller_status in GIVEN_UP or jobs_given_up:
        return "failed"
    if users_refreshed >= users_total:
        return "complete"
    return "incomplete"


@dataclass(frozen=True, slots=True)
class RunProgress:
    """Where one backfill run stands, counting this run's work only.

    `users_refreshed` counts snapshotted users whose two objective surfaces
    were both written after this run's trigger by the current model versions:
    it starts at 0 on a repeat backfill, whatever earlier runs left behind.
    `job_counts` are this run's fan-out jobs by status.
    """

    job_id: int
    source: str
    controller_status: str | None  # None: the controller job was pruned
    users_total: int
    users_fanned_out: int
    jobs_enqueued: int
    users_with_both: int
    users_refreshed: int
    users_not_on_current_model: int
    job_counts: dict[str, int]
    created_at: datetime
    fanout_done: bool
    observed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    cancel_requested: bool = False
    cancelled_at: datetime | None = None
    jobs_waiting_retry: int = 0  # pending again after a failed attempt
    last_settled_at: datetime | None = None  # when the run's latest job settled
    runs_of_source: int = 1  # runs the source label has had, this one included
    max_rate: float | None = None
    missing_sample: list[UUID] = field(default_factory=list)
    dead_sample: list[tuple[int, str, str | None, str | None]] = field(default_factory=list)

    @property
    def jobs_open(self) -> int:
        return sum(self.job_counts.get(status, 0) for status in IN_FLIGHT)

    @property
    def jobs_settled(self) -> int:
        return sum(n for status, n in self.job_counts.items() if status not in IN_FLIGHT)

    @property
    def given_up(self) -> int:
        """Fan-out jobs that ended without success: dead, or failed on an unusable payload."""
        return sum(self.job_counts.get(status, 0) for status in GIVEN_UP)

    @property
    def cancelled(self) -> bool:
        return self.cancel_requested or self.controller_status == "cancelled"

    @property
    def drained(self) -> bool:
        """Nothing of this run is left to happen: no controller step, no fan-out job is open."""
        return self.controller_status not in IN_FLIGHT and self.jobs_open == 0

    @property
    def outcome(self) -> RunOutcome:
        return run_outcome(
            controller_status=self.controller_status,
            cancelled=self.cancelled,
            jobs_open=self.jobs_open,
            jobs_given_up=self.given_up,
            users_refreshed=self.users_refreshed,
            users_total=self.users_total,
        )

    @property
    def complete(self) -> bool:
        """Every snapshotted user refreshed by this run on the current code, every job of the
        run settled without a failure, the controller completed and the run not cancelled."""
        return self.outcome == "complete"

    @property
    def label_reused(self) -> bool:
        return self.runs_of_source > 1

    @property
    def elapsed_seconds(self) -> float:
        """From the trigger to the run's last settled job once drained, else to now."""
        end = self.observed_at
        if self.drained and self.last_settled_at is not None:
            end = self.last_settled_at
        return max(0.0, (end - self.created_at).total_seconds())

    @property
    def average_users_per_s(self) -> float | None:
        """Users refreshed by this run per second since its trigger."""
        elapsed = self.elapsed_seconds
        return self.users_refreshed / elapsed if elapsed > 0 else None

    @property
    def average_jobs_per_s(self) -> float | None:
        """Fan-out jobs of this run settled per second since its trigger."""
        elapsed = self.elapsed_seconds
        return self.jobs_settled / elapsed if elapsed > 0 else None

    def problems(self) -> list[str]:
        found = []
        if self.cancelled:
            when = f" at {self.cancelled_at.isoformat()}" if self.cancelled_at else ""
            found.append(
                f"run {self.job_id} was cancelled{when}: it refreshed "
                f"{self.users_refreshed:,} of {self.users_total:,} users"
            )
        elif self.controller_status != "completed":
            found.append(f"controller job {self.job_id} is {self.controller_status or 'pruned'}")
        if self.jobs_open:
            retrying = (
                f", {self.jobs_waiting_retry:,} of them waiting to retry after a failure"
                if self.jobs_waiting_retry
                else ""
            )
            found.append(f"{self.jobs_open:,} fan-out jobs are pending or processing{retrying}")
        not_refreshed = self.users_total - self.users_refreshed
        if not_refreshed and not self.cancelled:
            sample = ", ".join(str(u) for u in self.missing_sample)
            example = f" (e.g. {sample})" if sample else ""
            found.append(
                f"{not_refreshed:,} of {self.users_total:,} snapshotted users not yet refreshed "
                f"by this run on the current model versions{example}"
            )
        if self.job_counts.get("dead", 0):
            found.append(f"{self.job_counts['dead']:,} fan-out jobs are dead")
        if self.job_counts.get("failed", 0):
            found.append(f"{self.job_counts['failed']:,} fan-out jobs failed")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "source": self.source,
            "outcome": self.outcome,
            "complete": self.complete,
            "cancelled": self.cancelled,
            "cancelled_at": self.cancelled_at.isoformat() if self.cancelled_at else None,
            "controller_status": self.controller_status,
            "users_total": self.users_total,
            "users_fanned_out": self.users_fanned_out,
            "jobs_enqueued": self.jobs_enqueued,
            "users_with_both_projections": self.users_with_both,
            "users_refreshed_since_trigger": self.users_refreshed,
            "users_not_on_current_model": self.users_not_on_current_model,
            "fanout_job_counts": self.job_counts,
            "jobs_waiting_retry": self.jobs_waiting_retry,
            "created_at": self.created_at.isoformat(),
            "observed_at": self.observed_at.isoformat(),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "average_users_per_s": _rounded(self.average_users_per_s),
            "average_jobs_per_s": _rounded(self.average_jobs_per_s),
            "fanout_done": self.fanout_done,
            "max_rate": self.max_rate,
            "label_runs": self.runs_of_source,
            "label_reused": self.label_reused,
            "problems": self.problems(),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def current_model_versions() -> dict[tuple[str, str], str]:
    """The model version the running code stamps on each projection."""
    return {output.row: output.model_version for output in outputs_of(READ_MODELS)}


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


def _job_counts(
    rows: list[tuple[str, bool, int, datetime | None]],
) -> tuple[dict[str, int], int, datetime | None]:
    """Counts by status, pending jobs waiting for a retry, and the latest settle time."""
    counts: dict[str, int] = {}
    waiting_retry = 0
    last_settled: datetime | None = None
    for status, retried, count, settled_at in rows:
        counts[status] = counts.get(status, 0) + count
        if status == "pending" and retried:
            waiting_retry += count
        if settled_at is not None and (last_settled is None or settled_at > last_settled):
            last_settled = settled_at
    return counts, waiting_retry, last_settled


def run_progress(conn: DbConnection, source: str, *, sample: int = 5) -> RunProgress | None:
    """The latest run of `source`, or None when it was never triggered."""
    queries = load_queries("backfill_progress.sql")
    run = conn.execute(queries["latest_run"], {"source": source}).fetchone()
    if run is None:
        return None
    (
        job_id,
        snapshot_id,
        users_total,
        next_position,
        jobs_enqueued,
        max_rate,
        cancel_requested,
        cancelled_at,
        created_at,
        fanout_done_at,
        controller_status,
        runs_of_source,
        observed_at,
    ) = run
    models = current_model_versions()
    model_params = {
        "snapshot_id": snapshot_id,
        "since": created_at,
        "state_model": models[("objective_state", "active")],
        "advisory_model": models[("objective_advisory", "overview")],
    }
    coverage = conn.execute(queries["snapshot_coverage"], model_params).fetchone()
    with_both, refreshed, not_current = coverage or (0, 0, 0)
    # One run of the source: its jobs are all the source's jobs, counted from the index.
    counts_query = "source_job_counts" if runs_of_source == 1 else "run_job_counts"
    rows = conn.execute(queries[counts_query], {"source": source, "job_id": job_id}).fetchall()
    counts, waiting_retry, last_settled_at = _job_counts(rows)
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
        observed_at=observed_at,
        cancel_requested=cancel_requested,
        cancelled_at=cancelled_at,
        jobs_waiting_retry=waiting_retry,
        last_settled_at=last_settled_at,
        runs_of_source=runs_of_source,
        max_rate=max_rate,
    )
    if refreshed < users_total and progress.drained:
        rows = conn.execute(
            queries["not_refreshed_sample"], model_params | {"limit": sample}
        ).fetchall()
        progress.missing_sample.extend(r[0] for r in rows)
    if progress.given_up:
        rows = conn.execute(
            queries["dead_jobs_sample"], {"source": source, "job_id": job_id, "limit": sample}
        ).fetchall()
        progress.dead_sample.extend(tuple(r) for r in rows)
    return progress


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One line of `stride backfill history`."""

    job_id: int
    source: str
    created_at: datetime
    users_total: int
    users_refreshed: int  # snapshotted users with both surfaces written since the trigger
    jobs_enqueued: int
    controller_status: str | None
    cancel_requested: bool
    cancelled_at: datetime | None
    jobs_open: int
    jobs_given_up: int  # dead or failed fan-out jobs
    last_settled_at: datetime | None
    observed_at: datetime
    # projection_type/key -> revision of the code that triggered the run (None: before
    # revisions were recorded).
    revisions: dict[str, int] | None = None

    @property
    def outcome(self) -> RunOutcome:
        return run_outcome(
            controller_status=self.controller_status,
            cancelled=self.cancel_requested,
            jobs_open=self.jobs_open,
            jobs_given_up=self.jobs_given_up,
            users_refreshed=self.users_refreshed,
            users_total=self.users_total,
        )

    @property
    def dead_jobs(self) -> int:
        """Jobs of the run that ended without success, the controller included."""
        return self.jobs_given_up + (1 if self.controller_status in GIVEN_UP else 0)

    @property
    def duration_seconds(self) -> float:
        """Trigger to the last settled job (or the cancel); still running: trigger to now."""
        if self.outcome == "running":
            end = self.observed_at
        else:
            ends = [t for t in (self.last_settled_at, self.cancelled_at) if t is not None]
            end = max(ends) if ends else self.created_at
        return max(0.0, (end - self.created_at).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "source": self.source,
            "triggered_at": self.created_at.isoformat(),
            "users_total": self.users_total,
            "users_refreshed": self.users_refreshed,
            "jobs_enqueued": self.jobs_enqueued,
            "controller_status": self.controller_status,
            "duration_seconds": round(self.duration_seconds, 3),
            "outcome": self.outcome,
            "dead_jobs": self.dead_jobs,
            "jobs_open": self.jobs_open,
            "cancelled_at": self.cancelled_at.isoformat() if self.cancelled_at else None,
            "revisions": self.revisions,
        }


DEFAULT_HISTORY_LIMIT = 20


def run_history(
    conn: DbConnection, source: str | None = None, *, limit: int = DEFAULT_HISTORY_LIMIT
) -> list[RunSummary]:
    """The latest `limit` runs, of `source` or of every source, newest first."""
    rows = conn.execute(
        load_queries("backfill_progress.sql")["run_history"], {"source": source, "limit": limit}
    ).fetchall()
    return [
        RunSummary(
            job_id=job_id,
            source=run_source,
            created_at=created_at,
            users_total=users_total,
            users_refreshed=users_refreshed,
            jobs_enqueued=jobs_enqueued,
            controller_status=controller_status,
            cancel_requested=cancel_requested,
            cancelled_at=cancelled_at,
            jobs_open=jobs_open,
            jobs_given_up=given_up,
            last_settled_at=last_settled_at,
            observed_at=observed_at,
            revisions=revisions,
        )
        for (
            job_id,
            run_source,
            created_at,
            users_total,
            jobs_enqueued,
            cancel_requested,
            cancelled_at,
            controller_status,
            jobs_open,
            given_up,
            last_settled_at,
            users_refreshed,
            observed_at,
            revisions,
        ) in rows
    ]


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


# Users per stored model version of each projection (a projection row is one user's).
MODEL_VERSION_COUNTS = """
SELECT projection_type, key, model_version, count(*)
FROM projections
GROUP BY projection_type, key, model_version
ORDER BY projection_type, key, model_version
"""


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
    revisions: RevisionReport | None = None  # users per stored revision (every user)


# The whole status document is read from one snapshot, so the runbook's reports
# and the run's verdict never disagree (read one after the other, a job that
# completes in between would show `processing` in one and complete in the other).
# No locks: a read-only snapshot.
SNAPSHOT_READ = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def backfill_status(conn: DbConnection, source: str) -> BackfillStatus:
    """The runbook's four reports, the latest run of `source` and stale users, at one instant.

    `conn` must be in autocommit mode (the read opens its own transaction).
    """
    with conn.transaction():
        conn.execute(SNAPSHOT_READ)
        return BackfillStatus(
            reports=runbook_reports(conn, source),
            run=run_progress(conn, source),
            users_on_older_model_versions=users_on_old_model(conn),
            revisions=revision_report(conn),
        )


DrainProgress = Callable[[RunProgress], None]


# Reading a large run's progress is not free: about 1 s a poll at 100,000 users,
# on the database the backfill is using. A watcher waits at least this many
# times as long as its last poll took, so watching costs the run at most about
# a sixth of one core however large it is.
POLL_COST_FACTOR = 5.0


def next_poll_delay(poll_seconds: float, last_poll_cost: float, remaining: float | None) -> float:
    """Seconds to sleep before the next poll: `poll_seconds`, or longer after a slow poll,
    never past the deadline (`remaining` seconds away; None: no deadline)."""
    delay = max(poll_seconds, POLL_COST_FACTOR * last_poll_cost)
    return delay if remaining is None else max(0.0, min(delay, remaining))


def wait_until_drained(
    conn: DbConnection,
    source: str,
    *,
    timeout: float | None = None,
    on_progress: DrainProgress | None = None,
    poll_seconds: float = 1.0,
) -> RunProgress | None:
    """Poll the latest run of `source` until nothing of it is left to run, or `timeout` passed.

    Drained means settled, not complete: a run that was cancelled, or whose
    jobs died, is drained too; `RunProgress.complete` says whether it succeeded.

    `conn` must be in autocommit mode, so every poll sees fresh rows. None when
    `source` was never triggered.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        started = time.monotonic()
        progress = run_progress(conn, source)
        cost = time.monotonic() - started
        if progress is None:
            return None
        if on_progress is not None:
            on_progress(progress)
        if progress.drained or (deadline is not None and time.monotonic() > deadline):
            return progress
        remaining = None if deadline is None else deadline - time.monotonic()
        time.sleep(next_poll_delay(poll_seconds, cost, remaining))
