"""`stride jobs …`: the operator's view of the queue, reviving dead jobs, pruning old ones."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer

from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    console,
    print_json,
    render_table,
    typer_app,
    usage_error,
)
from stride.queue.jobs import retry_dead
from stride.queue.maintenance import prune_completed
from stride.queue.status import QueueStatus, queue_status

app = typer_app("Inspect and maintain the job queue (background_jobs).")

STATUS_COLUMNS = ("pending", "processing", "completed", "failed", "dead", "cancelled")
DURATION = re.compile(r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
ERROR_PREVIEW = 160


def parse_duration(flag: str, value: str) -> timedelta:
    """'7d', '12h', '30m', '45s', '2w' -> timedelta; anything else is a usage error."""
    match = DURATION.match(value)
    if match is None:
        usage_error(f"{flag}: expected a duration like 7d, 12h, 30m or 45s, got {value!r}")
    return timedelta(seconds=float(match["amount"]) * UNIT_SECONDS[match["unit"]])


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none due"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _render_status(status: QueueStatus) -> None:
    by_type: dict[str, dict[str, int]] = {}
    for job_type, job_status, count in status.counts:
        by_type.setdefault(job_type, {})[job_status] = count
    extra = sorted({s for counts in by_type.values() for s in counts} - set(STATUS_COLUMNS))
    columns = [*STATUS_COLUMNS, *extra]
    render_table(
        "jobs by type and status",
        ["job type", *columns],
        [(t, *(counts.get(c, 0) for c in columns)) for t, counts in sorted(by_type.items())],
    )
    console.print(f"oldest due pending job: {_age(status.oldest_due_pending_seconds)}")
    console.print(f"expired leases (processing, worker silent): {status.expired_leases}")
    if status.latest_dead:
        render_table(
            "latest dead or failed jobs",
            ["id", "job type", "status", "attempts", "ended at", "error"],
            [
                (
                    d.id,
                    d.job_type,
                    d.status,
                    d.attempt,
                    d.died_at,
                    (d.error_message or "")[:ERROR_PREVIEW],
                )
                for d in status.latest_dead
            ],
        )
    else:
        console.print("no dead or failed jobs")


@app.command("status")
def status_command(database_url: DatabaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Counts by job type and status, oldest due pending age, expired leases, latest dead/failed."""
    with connected(database_url) as conn:
        status = queue_status(conn)
    if as_json:
        print_json(status.to_json())
    else:
        _render_status(status)


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
) -> None:
    """Put dead and failed jobs back to pending with a fresh set of attempts."""
    if not dead:
        usage_error("--dead is required: only dead (and failed) jobs can be retried")
    if job_type is not None and not job_type.strip():
        usage_error("--job-type: must not be blank")
    with connected(database_url) as conn:
        count = retry_dead(conn, job_type)
    console.print(f"retried {count} dead job{'s' if count != 1 else ''}")


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
) -> None:
    """Delete old completed jobs in short batches (claimers are never blocked for long)."""
    age = parse_duration("--completed-older-than", completed_older_than)
    with connected(database_url) as conn:
        count = prune_completed(conn, age, batch_size)
    console.print(f"pruned {count} completed job{'s' if count != 1 else ''}")
