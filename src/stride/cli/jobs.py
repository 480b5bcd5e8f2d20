"""`stride jobs …`: the operator's view of the queue, one job in detail, reviving and pruning."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer

from stride.app import build_registry
from stride.cli.common import (
    Column,
    DatabaseUrlOption,
    JsonOption,
    age_text,
    connected,
    fail,
    iso_time,
    print_json,
    render_table,
    say,
    table_fits,
    typer_app,
    usage_error,
)
from stride.cli.workers import waiting_lines
from stride.queue.jobs import retry_dead
from stride.queue.maintenance import prune_completed
from stride.queue.status import (
    SHOWN_STATUSES,
    JobDetail,
    JobSummary,
    QueueStatus,
    WorkersReport,
    given_up_job_types,
    list_jobs,
    queue_status,
    retrying_counts,
    show_job,
    workers_report,
)
from stride.storage.connection import DbConnection

app = typer_app("Inspect the job queue (background_jobs): list, show, retry, prune.")

DURATION = re.compile(r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Far enough back for any retention; further and `now() - age` leaves PostgreSQL's
# timestamp range (and past ~2.7 million years, Python's timedelta).
LONGEST_DURATION = timedelta(days=100 * 366)
LATEST_RETRYING_SHOWN = 10


def parse_duration(flag: str, value: str) -> timedelta:
    """'7d', '12h', '30m', '45s', '2w' -> timedelta; anything else is a usage error."""
    match = DURATION.match(value)
    if match is None:
        usage_error(f"{flag}: expected a duration like 7d, 12h, 30m or 45s, got {value!r}")
    seconds = float(match["amount"]) * UNIT_SECONDS[match["unit"]]
    if seconds > LONGEST_DURATION.total_seconds():
        usage_error(f"{flag}: {value.strip()} is longer than stride can count back (at most 100y)")
    return timedelta(seconds=seconds)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


# --- status ------------------------------------------------------------------------------------


def _status_counts(status: QueueStatus, retrying: dict[str, int]) -> dict[str, dict[str, int]]:
    """Counts by job type and shown status: a job waiting for its retry is `retrying`."""
    by_type: dict[str, dict[str, int]] = {}
    for job_type, job_status, count in status.counts:
        by_type.setdefault(job_type, {})[job_status] = count
    for job_type, count in retrying.items():
        counts = by_type.setdefault(job_type, {})
        # Two reads, not one snapshot: never show a negative count if jobs moved between them.
        counts["pending"] = max(counts.get("pending", 0) - count, 0)
        counts["retrying"] = count
    return by_type


def _render_counts(by_type: dict[str, dict[str, int]]) -> None:
    extra = sorted({s for counts in by_type.values() for s in counts} - set(SHOWN_STATUSES))
    columns = [*SHOWN_STATUSES, *extra]
    matrix = [(t, *(counts.get(c, 0) for c in columns)) for t, counts in sorted(by_type.items())]
    headers = ["job type", *columns]
    if table_fits(headers, matrix):
        render_table("jobs by type and status", headers, matrix)
        return
    # Too narrow for a column per status: each type's non-zero statuses on one line.
    render_table(
        "jobs by type and status",
        ["job type", "jobs"],
        [
            (
                job_type,
                " · ".join(f"{s} {counts[s]:,}" for s in columns if counts.get(s)) or "none",
            )
            for job_type, counts in sorted(by_type.items())
        ],
    )


def _render_status(
    status: QueueStatus, retrying: dict[str, int], latest_retrying: list[JobSummary]
) -> None:
    by_type = _status_counts(status, retrying)
    if by_type:
        _render_counts(by_type)
    else:
        say("no jobs")
    say(f"oldest due pending job: {age_text(status.oldest_due_pending_seconds) or 'none due'}")
    say(f"expired leases (processing, worker silent): {status.expired_leases:,}")
    if latest_retrying:
        _render_job_table("jobs waiting to retry (latest)", latest_retrying)
    if status.latest_dead:
        render_table(
            "latest dead or failed jobs",
            [Column("id", identifier=True), "job type", "status", "attempts", "ended at"],
            [(d.id, d.job_type, d.status, d.attempt, d.died_at) for d in status.latest_dead],
        )
        _render_errors([(d.id, d.status, d.error_message) for d in status.latest_dead])
    else:
        say("no dead or failed jobs")


def _render_errors(errors: list[tuple[int, str, str | None]]) -> None:
    """Each job's error in full, one per paragraph: never cut to fit a column."""
    shown = [(job_id, state, error) for job_id, state, error in errors if error]
    if not shown:
        return
    say("errors:")
    for job_id, state, error in shown:
        say(f"  job {job_id} ({state}): {error}")


@app.command("status")
def status_command(database_url: DatabaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Summarise the queue: counts by job type and status, stuck and failed jobs, workers.

    A pending job that already failed an attempt shows as `retrying` (stored as
    pending). Errors are printed in full below the tables.
    """
    with connected(database_url) as conn:
        status = queue_status(conn)
        retrying = retrying_counts(conn)
        latest_retrying = (
            list_jobs(conn, status="retrying", limit=LATEST_RETRYING_SHOWN) if retrying else []
        )
        workers = workers_report(conn)
    if as_json:
        document = status.to_json()
        document["retrying"] = {
            "counts": retrying,
            "latest": [j.as_dict() for j in latest_retrying],
        }
        document["workers"] = {
            "live": len(workers.live),
            "waiting_for_nobody": workers.unclaimed,
        }
        print_json(document)
        return
    _render_status(status, retrying, latest_retrying)
    _say_workers(workers)


def _say_workers(workers: WorkersReport) -> None:
    live = len(workers.live)
    if live:
        say(f"live workers: {live:,} (`stride workers` lists them)")
    for line in waiting_lines(workers):
        say(line)


# --- list and show -------------------------------------------------------------------------------


def _when(job: JobSummary) -> tuple[str, Any]:
    if job.status == "pending":
        return "due", job.scheduled_for
    if job.status == "retrying":
        return "retry at", job.scheduled_for
    if job.status == "processing":
        return "started", job.started_at
    return "ended", job.completed_at


def _when_text(job: JobSummary) -> str:
    label, moment = _when(job)
    return f"{label} {iso_time(moment)}" if moment is not None else ""


def _render_job_table(title: str, jobs: list[JobSummary], *, by_source: bool = False) -> None:
    """A row per job, then each job's last error in full (never cut to a column).

    The source column is left out when it says nothing: every job listed has
    none, or the list was filtered by it (`by_source`).
    """
    with_source = not by_source and any(j.source is not None for j in jobs)
    columns: list[str | Column] = [
        Column("id", identifier=True),
        "job type",
        "status",
        "attempt",
        "when",
    ]
    rows: list[list[Any]] = [
        [j.id, j.job_type, j.status, f"{j.attempt}/{j.attempts_allowed}", _when_text(j)]
        for j in jobs
    ]
    if with_source:
        columns.append("source")
        for row, job in zip(rows, jobs, strict=True):
            row.append(job.source)
    render_table(title, columns, rows)
    _render_errors([(j.id, j.status, j.error_message) for j in jobs if j.status != "completed"])


def _checked_status(status: str | None) -> str | None:
    if status is None:
        return None
    wanted = status.strip().lower()
    if wanted not in SHOWN_STATUSES:
        usage_error(f"--status: unknown status {status!r} (one of {', '.join(SHOWN_STATUSES)})")
    return wanted


def _not_blank(flag: str, value: str | None) -> str | None:
    if value is not None and not value.strip():
        usage_error(f"{flag}: must not be blank")
    return value


@app.command("list")
def list_command(
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="Only jobs in this status: pending, retrying (pending after a failed "
            "attempt), processing, completed, failed, dead or cancelled.",
        ),
    ] = None,
    job_type: Annotated[
        str | None, typer.Option("--type", metavar="TYPE", help="Only jobs of this job type.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", metavar="LABEL", help="Only jobs of this backfill source label."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, help="Show at most this many jobs.")
    ] = 20,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first, with their status, attempts and (below) their last errors."""
    wanted = _checked_status(status)
    _not_blank("--type", job_type)
    _not_blank("--source", source)
    with connected(database_url) as conn:
        jobs = list_jobs(conn, status=wanted, job_type=job_type, source=source, limit=limit)
    if as_json:
        print_json({"jobs": [j.as_dict() for j in jobs]})
        return
    if not jobs:
        say("no jobs match")
        return
    _render_job_table(f"jobs (newest first, at most {limit:,})", jobs, by_source=source is not None)


@app.command("show")
def show_command(
    job_id: Annotated[int, typer.Argument(metavar="ID", help="The job's id.", min=1)],
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one job: status, attempts, payload, and each failed attempt's error and time."""
    with connected(database_url) as conn:
        detail = show_job(conn, job_id)
    if detail is None:
        fail(f"no job {job_id}")
    if as_json:
        print_json(detail.as_dict())
        return
    _render_detail(detail)


def _render_detail(detail: JobDetail) -> None:
    job = detail.job
    shown_status = job.status
    if job.status != job.stored_status:
        shown_status += f" (stored as {job.stored_status}, waiting for its retry)"
    fields: list[tuple[str, Any]] = [
        ("status", shown_status),
        ("attempts", f"{job.attempt} of {job.attempts_allowed}"),
        ("priority", job.priority),
        ("user", job.user_id),
        ("source", job.source),
        ("dedup key", detail.dedup_key),
        ("created at", job.created_at),
        ("due at", job.scheduled_for),
        ("started at", job.started_at),
        ("ended at", job.completed_at),
        ("lease owner" if job.status == "processing" else "last run by", job.locked_by),
        ("lease until", job.locked_until if job.status == "processing" else None),
        ("last error", job.error_message),
    ]
    render_table(
        f"job {job.id} ({job.job_type})",
        ["field", "value"],
        [(name, value) for name, value in fields if value is not None],
    )
    say("payload:")
    for line in _json_lines(detail.payload):
        say(f"  {line}")
    if not detail.errors:
        say("no failed attempts recorded")
        return
    say(f"failed attempts (oldest first, the last {len(detail.errors)} kept):")
    for entry in detail.errors:
        say(
            f"  attempt {entry.get('attempt')} at {_entry_time(entry.get('at'))} "
            f"({entry.get('outcome')}, worker {entry.get('worker') or '?'}): {entry.get('error')}"
        )


def _entry_time(value: Any) -> str:
    """An error history time (JSON text from PostgreSQL) in the views' ISO-8601 form."""
    try:
        return iso_time(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def _json_lines(value: Any) -> list[str]:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


# --- retry and prune -----------------------------------------------------------------------------


def _known_job_types(conn: DbConnection) -> set[str]:
    """Types a retry can name: the product's handlers, and any type with a dead or failed job."""
    return set(build_registry().job_types) | set(given_up_job_types(conn))


@app.command("retry")
def retry_command(
    dead: Annotated[
        bool,
        typer.Option("--dead", help="Retry jobs that ended dead or failed (required)."),
    ] = False,
    job_type: Annotated[
        str | None, typer.Option("--job-type", metavar="TYPE", help="Only this job type.")
    ] = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put dead and failed jobs back to pending with a fresh set of attempts."""
    if not dead:
        usage_error("--dead is required: only dead (and failed) jobs can be retried")
    _not_blank("--job-type", job_type)
    with connected(database_url) as conn:
        if job_type is not None:
            known = _known_job_types(conn)
            if job_type not in known:
                usage_error(
                    f"--job-type: unknown job type {job_type!r}: no handler runs it and no "
                    f"dead or failed job has it (known: {', '.join(sorted(known)) or 'none'})"
                )
        count = retry_dead(conn, job_type)
    if as_json:
        print_json({"retried": count, "job_type": job_type})
    else:
        say(f"retried {_plural(count, 'dead job')}")


@app.command("prune")
def prune_command(
    completed_older_than: Annotated[
        str,
        typer.Option(
            "--completed-older-than",
            metavar="AGE",
            help="Delete completed jobs finished longer ago than this (e.g. 7d, 12h).",
        ),
    ],
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", metavar="N", min=1, help="Rows deleted per transaction."),
    ] = 1000,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete old completed jobs in short batches (claimers are never blocked for long)."""
    age = parse_duration("--completed-older-than", completed_older_than)
    with connected(database_url) as conn:
        count = prune_completed(conn, age, batch_size)
    if as_json:
        print_json({"pruned": count, "completed_older_than_seconds": age.total_seconds()})
    else:
        say(f"pruned {_plural(count, 'completed job')}")
