"""`stride backfill …`: trigger the objective foundation backfill, watch it, verify it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stride.backfill import DEFAULT_SOURCE
from stride.backfill.control import cancel_backfill
from stride.backfill.reports import (
    BackfillStatus,
    DrainProgress,
    Report,
    RunProgress,
    backfill_status,
    wait_until_drained,
)
from stride.backfill.sources import unknown_source
from stride.backfill.trigger import BackfillInputError, trigger_backfill, validate_source
from stride.backfill.verify import verify_sample
from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    console,
    database,
    database_errors,
    err_console,
    fail,
    finite_at_least,
    print_json,
    render_table,
    typer_app,
    usage_error,
)
from stride.storage.connection import DbConnection, connect

app = typer_app("Recalculate every user's objective projections and verify the result.")

SourceOption = Annotated[
    str,
    typer.Option("--source", help="Label for traceability and dedup (any text; not blank)."),
]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Show live progress until the fan-out has drained.")
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        help="With --wait: give up after this many seconds (exit 1).",
        callback=finite_at_least(0, "seconds"),
    ),
]


def _checked_source(source: str) -> str:
    try:
        return validate_source(source)
    except BackfillInputError as exc:
        usage_error(str(exc))


def _render_reports(reports: list[Report]) -> None:
    for report in reports:
        if len(report.rows) == 1 and len(report.columns) > 2:
            # One wide row (coverage, lag) reads better as name/value pairs.
            render_table(
                report.title,
                ["measure", "value"],
                list(zip(report.columns, report.rows[0], strict=True)),
            )
        else:
            render_table(report.title, report.columns, report.rows)


def _render_progress(progress: RunProgress) -> None:
    render_table(
        f"Backfill run {progress.job_id} ({progress.source})",
        ["measure", "value"],
        [
            ("controller job status", progress.controller_status),
            ("users in snapshot", progress.users_total),
            ("users fanned out", progress.users_fanned_out),
            ("fan-out jobs enqueued", progress.jobs_enqueued),
            ("users with both projections", progress.users_with_both),
            ("users refreshed since trigger", progress.users_refreshed),
            ("users not on the current model version", progress.users_not_on_current_model),
        ],
    )
    for problem in progress.problems():
        err_console.print(f"[yellow]not complete:[/yellow] {problem}", highlight=False)


@contextmanager
def drain_bar(quiet: bool) -> Iterator[DrainProgress]:
    """A progress bar of a draining backfill, fed one RunProgress per poll."""
    columns = (
        TextColumn("[bold]backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("users · {task.fields[rate]} jobs/s · {task.fields[open]} jobs open"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, disable=quiet) as bar:
        task = bar.add_task("users", total=None, rate="-", open="-")
        previous: tuple[float, int] | None = None

        def show(progress: RunProgress) -> None:
            nonlocal previous
            done_jobs = sum(
                n for s, n in progress.job_counts.items() if s not in ("pending", "processing")
            )
            now = time.monotonic()
            rate = "-"
            if previous is not None and now > previous[0]:
                rate = f"{(done_jobs - previous[1]) / (now - previous[0]):,.0f}"
            previous = (now, done_jobs)
            bar.update(
                task,
                total=progress.users_total,
                completed=progress.users_refreshed,
                rate=rate,
                open=f"{progress.jobs_open:,}",
            )

        yield show


def wait_for_drain(url: str, source: str, timeout: float | None, quiet: bool) -> RunProgress:
    """Poll the run until its fan-out has drained, drawing a progress bar.

    Says so on stderr when `timeout` ran out first (the caller exits non-zero).
    """
    with connect(url, autocommit=True) as conn, drain_bar(quiet) as show:
        progress = wait_until_drained(conn, source, timeout=timeout, on_progress=show)
    if progress is None:
        fail(f"no backfill was ever triggered for source {source!r}")
    if timeout is not None and not progress.drained:
        err_console.print(
            f"[red]timed out[/red] after {timeout:g}s: the backfill has not drained "
            f"(controller job {progress.job_id} is {progress.controller_status}, "
            f"{progress.jobs_open:,} fan-out jobs open); is a `stride worker` running?",
            highlight=False,
            soft_wrap=True,
        )
    return progress


def render_status(
    status: BackfillStatus, as_json: bool, extra: dict[str, Any] | None = None
) -> None:
    if as_json:
        document: dict[str, Any] = dict(extra or {})
        document["reports"] = {r.name: r.as_dict() for r in status.reports}
        document["run"] = status.run.as_dict() if status.run else None
        document["users_on_older_model_versions"] = status.users_on_older_model_versions
        print_json(document)
        return
    _render_reports(status.reports)
    if status.run:
        _render_progress(status.run)
    console.print(
        "users (all) whose objective projections an older model version computed: "
        f"{status.users_on_older_model_versions}",
        highlight=False,
    )


def print_report(
    conn: DbConnection, source: str, as_json: bool, extra: dict[str, Any] | None = None
) -> RunProgress | None:
    status = backfill_status(conn, source)
    render_status(status, as_json, extra)
    return status.run


@app.command("objective-foundation")
def objective_foundation(
    database_url: DatabaseUrlOption = None,
    source: SourceOption = DEFAULT_SOURCE,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Do not print the verification reports.")
    ] = False,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    max_rate: Annotated[
        float | None,
        typer.Option(
            "--max-rate",
            help="Fan out at most this many users per second (at least 0.1).",
            callback=finite_at_least(0.1, "users per second"),
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Enqueue the one-shot objective foundation backfill (one job per source in flight)."""
    source = _checked_source(source)
    with database_errors():
        target = database(database_url)
        with connect(target.url, autocommit=True) as conn:
            result = trigger_backfill(conn, source, max_rate=max_rate)
        trigger_doc = {
            "outcome": result.outcome,
            "job_id": result.job_id,
            "users": result.users,
            "message": result.describe(),
        }
        if not as_json:
            console.print(result.describe(), highlight=False)
        if result.outcome == "no_users":
            if as_json:
                print_json({"trigger": trigger_doc})
            return
        progress = wait_for_drain(target.url, source, timeout, quiet=as_json) if wait else None
        if no_verify:
            if as_json:
                print_json({"trigger": trigger_doc})
        else:
            with connect(target.url, autocommit=True) as conn:
                progress = print_report(conn, source, as_json, {"trigger": trigger_doc})
    # --wait promises a finished run: timed out, dead jobs or users missing exit 1,
    # with or without the reports.
    if wait and (progress is None or not progress.complete):
        raise typer.Exit(1)


# `backfill status` reports on a run: its --source names which (not a new label).
StatusSourceOption = Annotated[
    str,
    typer.Option("--source", help="The source label of the backfill to report on."),
]


def _require_run(conn: DbConnection, source: str) -> None:
    """Fail first, naming the sources that have runs, when `source` has none."""
    unknown = unknown_source(conn, source)
    if unknown is not None:
        fail(unknown.describe())


@app.command("status")
def status(
    source: StatusSourceOption = DEFAULT_SOURCE,
    database_url: DatabaseUrlOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the runbook's four reports and the run's progress; exit 0 only when complete."""
    source = _checked_source(source)
    with database_errors():
        target = database(database_url)
        with connect(target.url, autocommit=True) as conn:
            _require_run(conn, source)
        if wait:
            wait_for_drain(target.url, source, timeout, quiet=as_json)
        with connect(target.url, autocommit=True) as conn:
            progress = print_report(conn, source, as_json)
    if progress is None:
        fail(f"no backfill was ever triggered for source {source!r}")
    if not progress.complete:
        raise typer.Exit(1)


@app.command("verify")
def verify(
    sample: Annotated[
        int, typer.Option("--sample", help="How many random users to recompute.", min=1)
    ] = 100,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute a random sample of users in memory and report drift from stored projections."""
    with connected(database_url) as conn:
        result = verify_sample(conn, sample)
    if as_json:
        print_json(
            {
                "users_checked": result.users_checked,
                "projections_checked": result.projections_checked,
                "drifts": [d.as_dict() for d in result.drifts],
            }
        )
    else:
        console.print(
            f"checked {result.users_checked} users, {result.projections_checked} projections: "
            f"{len(result.drifts)} drifted",
            highlight=False,
        )
        if result.drifts:
            render_table(
                "drift",
                ["user", "projection", "first differing field", "stored", "recomputed"],
                [
                    (d.user_id, f"{d.projection_type}/{d.key}", d.path, d.stored, d.recomputed)
                    for d in result.drifts
                ],
            )
    if result.drifts:
        raise typer.Exit(1)


@app.command("cancel")
def cancel(
    source: Annotated[str, typer.Option("--source", help="The backfill's source label.")],
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a backfill's pending fan-out jobs and stop its controller; organic jobs untouched."""
    source = _checked_source(source)
    with connected(database_url) as conn:
        result = cancel_backfill(conn, source)
    if as_json:
        print_json(result.as_dict())
    else:
        console.print(result.describe(), highlight=False)
