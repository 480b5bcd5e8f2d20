"""`stride workers`: which worker processes are alive, what they hold, what waits for nobody."""

from __future__ import annotations

from datetime import datetime

from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    age_text,
    connected,
    iso_time,
    print_json,
    render_table,
    say,
)
from stride.queue.status import WorkersReport, WorkerView, workers_report


def workers_command(database_url: DatabaseUrlOption = None, as_json: JsonOption = False) -> None:
    """List worker processes: id, host, jobs in hand, oldest lease, last heartbeat.

    A worker is live while it beats within its lease (its lease keeper beats
    every third of it); a silent one died or hung, and its jobs are reclaimed
    once their leases run out. Ends with the due jobs no live worker will claim.
    """
    with connected(database_url) as conn:
        report = workers_report(conn)
    if as_json:
        print_json(report.as_dict())
        return
    render_workers(report)


def _state(worker: WorkerView) -> str:
    if not worker.registered:
        return "live (no heartbeat row)" if worker.live else "silent (leases expired)"
    return "live" if worker.live else f"silent {age_text(worker.silent_seconds)}"


def _since(moment: datetime | None, seconds: float | None) -> str:
    if moment is None:
        return ""
    return f"{iso_time(moment)} ({age_text(seconds)} ago)"


def render_workers(report: WorkersReport) -> None:
    """The workers table, then what the operator must know: nobody to run due jobs."""
    if report.workers:
        render_table(
            f"workers ({len(report.live)} live)",
            ["worker", "host", "state", "jobs in hand", "oldest lease", "last heartbeat", "runs"],
            [
                (
                    w.worker_id,
                    w.host or "?",
                    _state(w),
                    w.jobs_in_hand,
                    _since(w.oldest_lease_started_at, w.oldest_lease_seconds),
                    _since(w.last_heartbeat, w.silent_seconds),
                    _runs(w),
                )
                for w in report.workers
            ],
        )
    for line in waiting_lines(report):
        say(line)


def _runs(worker: WorkerView) -> str:
    if worker.concurrency is None:
        return ""
    types = "every job type" if worker.job_types is None else ", ".join(worker.job_types)
    return f"{worker.concurrency} runner{'s' if worker.concurrency != 1 else ''}: {types}"


def waiting_lines(report: WorkersReport) -> list[str]:
    """One line per problem a glance at the queue should reveal: nobody to run due jobs,
    workers gone silent."""
    due = sum(report.due_pending.values())
    if not report.live:
        lines = [
            f"no live workers: {due:,} due job{'s are' if due != 1 else ' is'} waiting for "
            "nobody; start one with `stride worker`"
            if due
            else "no live workers (and no due jobs waiting)"
        ]
    else:
        lines = [
            f"no live worker claims {job_type}: {count:,} due "
            f"job{'s wait' if count != 1 else ' waits'} for nobody "
            "(the live workers run with --job-types)"
            for job_type, count in report.unclaimed.items()
        ]
    silent = [w for w in report.workers if not w.live]
    if silent:
        lines.append(
            f"{len(silent)} worker{'s' if len(silent) != 1 else ''} silent for longer than "
            "the lease: stopped without a goodbye, crashed or hung; their jobs are reclaimed "
            "when the leases run out"
        )
    return lines
