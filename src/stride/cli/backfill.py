"""`stride backfill …`: trigger the objective foundation backfill, watch it, verify it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from stride.backfill import DEFAULT_SOURCE
from stride.backfill.control import cancel_backfill
from stride.backfill.preview import (
    DEFAULT_SAMPLE,
    PreviewResult,
    preview_users,
    save_preview,
)
from stride.backfill.preview import Progress as PreviewProgress
from stride.backfill.rates import MovingRate, RateSample, format_duration, format_rate
from stride.backfill.reports import (
    DEFAULT_HISTORY_LIMIT,
    BackfillStatus,
    DrainProgress,
    Report,
    RunProgress,
    backfill_status,
    run_history,
    wait_until_drained,
)
from stride.backfill.revision_report import RevisionReport
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
    bool,
    typer.Option(
        "--wait",
        help="Show live progress (10 s moving-average rates, elapsed, ETA) until nothing of "
        "the run is left to run; exit 0 only when it completed.",
    ),
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


def _counts(counts: dict[str, int]) -> str:
    return " · ".join(f"{status} {n:,}" for status, n in sorted(counts.items())) or "none yet"


def _render_progress(progress: RunProgress) -> None:
    if progress.label_reused:
        err_console.print(
            f"[yellow]note:[/yellow] source {progress.source!r} was reused: it has had "
            f"{progress.runs_of_source} runs, and the runbook's controller and fan-out reports "
            "above count them all together; the table below is the latest run "
            f"(job {progress.job_id}) alone. `stride backfill history` lists every run.",
            highlight=False,
            soft_wrap=True,
        )
    rows: list[tuple[str, str]] = [
        ("outcome", progress.outcome),
        ("controller job", f"{progress.job_id} ({progress.controller_status or 'pruned'})"),
        ("triggered at", progress.created_at.isoformat()),
        ("users in snapshot", f"{progress.users_total:,}"),
        ("users fanned out", f"{progress.users_fanned_out:,}"),
        ("fan-out jobs enqueued", f"{progress.jobs_enqueued:,}"),
        ("fan-out jobs of this run", _counts(progress.job_counts)),
        ("users refreshed by this run", f"{progress.users_refreshed:,}"),
        ("users with both projections (any run)", f"{progress.users_with_both:,}"),
        ("users not on the current model version", f"{progress.users_not_on_current_model:,}"),
        ("elapsed", format_duration(progress.elapsed_seconds)),
        (
            "average since trigger",
            f"{format_rate(progress.average_users_per_s)} users/s · "
            f"{format_rate(progress.average_jobs_per_s)} jobs/s",
        ),
    ]
    if progress.cancelled_at is not None:
        rows.insert(3, ("cancelled at", progress.cancelled_at.isoformat()))
    if progress.max_rate is not None:
        rows.insert(3, ("max rate", f"{progress.max_rate:,g} users/s"))
    render_table(f"Backfill run {progress.job_id} ({progress.source})", ["measure", "value"], rows)
    for index, problem in enumerate(progress.problems()):
        # A cancelled run's first problem is the cancel itself (RunProgress.problems).
        label = "cancelled" if progress.cancelled and index == 0 else "not complete"
        err_console.print(f"[yellow]{label}:[/yellow] {problem}", highlight=False, soft_wrap=True)


def describe_end(progress: RunProgress) -> str:
    """One line for the end of a watched run: what it came to, total time, average rates."""
    head = f"backfill run {progress.job_id} {progress.outcome}"
    if progress.outcome == "running":
        head = f"backfill run {progress.job_id} still running"
    return (
        f"{head}: {progress.users_refreshed:,} of {progress.users_total:,} users refreshed "
        f"in {format_duration(progress.elapsed_seconds)} (average "
        f"{format_rate(progress.average_users_per_s)} users/s, "
        f"{format_rate(progress.average_jobs_per_s)} jobs/s)"
    )


class _DrainView:
    """What the live view of a draining run draws: a bar, the moving rates, elapsed and ETA."""

    def __init__(self) -> None:
        self.rates = MovingRate(RATE_WINDOW_SECONDS)
        self.latest: RunProgress | None = None

    def observe(self, progress: RunProgress) -> None:
        if self.latest is None or self.latest.job_id != progress.job_id:
            self.rates = MovingRate(RATE_WINDOW_SECONDS)
            # The run had done nothing at its trigger: a watcher that joins late
            # starts from the average since then, not from nothing.
            self.rates.add(RateSample(progress.created_at.timestamp(), 0, 0))
        self.rates.add(
            RateSample(
                progress.observed_at.timestamp(), progress.users_refreshed, progress.jobs_settled
            )
        )
        self.latest = progress

    def __rich__(self) -> RenderableType:
        progress = self.latest
        if progress is None:
            return Text("backfill: waiting for the first report…")
        line = Table.grid(padding=(0, 1))
        line.add_row(
            Text("backfill", style="bold"),
            ProgressBar(
                total=max(progress.users_total, 1), completed=progress.users_refreshed, width=30
            ),
            Text(f"{progress.users_refreshed:,}/{progress.users_total:,} users"),
        )
        rates = Text(
            f"  {format_rate(self.rates.users_per_s)} users/s · "
            f"{format_rate(self.rates.jobs_per_s)} jobs/s · "
            f"{progress.jobs_open:,} jobs open · "
            f"elapsed {format_duration(progress.elapsed_seconds)} · "
            f"ETA {format_duration(self.rates.eta_seconds(progress.users_total))}"
        )
        return Group(line, rates)


# The live rates are averages over this many seconds of polls.
RATE_WINDOW_SECONDS = 10.0


@contextmanager
def drain_bar(quiet: bool) -> Iterator[DrainProgress]:
    """A live view of a draining backfill, fed one RunProgress per poll; ends with a summary.

    Rates are moving averages over the last RATE_WINDOW_SECONDS (server clock),
    the ETA comes from them, and the closing line gives total time and average
    rates since the trigger.
    """
    if quiet:
        yield lambda _progress: None
        return
    view = _DrainView()
    # Redrawn once per poll, from this thread only: the view is never read mid-update.
    with Live(view, console=err_console, auto_refresh=False, transient=False) as live:

        def show(progress: RunProgress) -> None:
            view.observe(progress)
            live.refresh()

        yield show
    if view.latest is not None:
        err_console.print(describe_end(view.latest), highlight=False, soft_wrap=True)


def wait_for_drain(url: str, source: str, timeout: float | None, quiet: bool) -> RunProgress:
    """Poll the run until nothing of it is left to run, drawing the live view.

    Says so on stderr when `timeout` ran out first (the caller exits non-zero).
    """
    with connect(url, autocommit=True) as conn, drain_bar(quiet) as show:
        progress = wait_until_drained(conn, source, timeout=timeout, on_progress=show)
    if progress is None:
        fail(f"no backfill was ever triggered for source {source!r}")
    if timeout is not None and not progress.drained:
        err_console.print(
            f"[red]timed out[/red] after {timeout:g}s: the backfill has not drained "
            f"(controller job {progress.job_id} is {progress.controller_status or 'pruned'}, "
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
        if status.revisions is not None:
            document["revisions"] = status.revisions.as_dict()
        print_json(document)
        return
    _render_reports(status.reports)
    if status.run:
        _render_progress(status.run)
    console.print(
        "users (all) whose objective projections an older model version computed: "
        f"{status.users_on_older_model_versions:,}",
        highlight=False,
    )
    if status.revisions is not None:
        _render_revisions(status.revisions)


def _render_revisions(report: RevisionReport) -> None:
    render_table(
        "Users per revision (all users)",
        ["read model", "projection", "revision", "users", "share"],
        report.rows(),
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
            help="Refresh at most this many users per second (at least 0.1): the fan-out "
            "jobs are scheduled that far apart, so workers cannot run them faster.",
            callback=finite_at_least(0.1, "users per second"),
        ),
    ] = None,
    as_json: JsonOption = False,
    only_stale: Annotated[
        bool,
        typer.Option(
            "--only-stale",
            help="Snapshot only users whose objective projections are missing or on a lower "
            "revision than this code's (e.g. the rest of a cancelled or partial run).",
        ),
    ] = False,
) -> None:
    """Enqueue the one-shot objective foundation backfill (one job per source in flight)."""
    source = _checked_source(source)
    progress: RunProgress | None = None
    with database_errors():
        target = database(database_url)
        with connect(target.url, autocommit=True) as conn:
            result = trigger_backfill(conn, source, max_rate=max_rate, only_stale=only_stale)
        trigger_doc = result.as_dict()
        if not as_json:
            console.print(result.describe(), highlight=False)
        if result.outcome == "no_users":
            if as_json:
                print_json({"trigger": trigger_doc})
            return
        if wait:
            progress = wait_for_drain(target.url, source, timeout, quiet=as_json)
        if no_verify:
            if as_json:
                document: dict[str, Any] = {"trigger": trigger_doc}
                if progress is not None:
                    document["run"] = progress.as_dict()
                print_json(document)
        else:
            with connect(target.url, autocommit=True) as conn:
                progress = print_report(conn, source, as_json, {"trigger": trigger_doc})
    # --wait promises an exit status: 0 only when the run completed.
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
    """Print the runbook's four reports and the latest run's progress; exit 0 only when that
    run is complete (every snapshotted user refreshed by it, no job open or failed)."""
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
                "by_revision": [r.as_dict() for r in result.by_revision],
            }
        )
    else:
        console.print(
            f"checked {result.users_checked} users, {result.projections_checked} projections: "
            f"{len(result.drifts)} drifted",
            highlight=False,
        )
        render_table(
            "checked per stored revision",
            ["projection", "stored revision", "checked", "drifted"],
            [
                (
                    r.projection,
                    "missing"
                    if r.revision is None
                    else f"{r.revision}{' (running)' if r.revision == r.running_revision else ''}",
                    r.checked,
                    r.drifted,
                )
                for r in result.by_revision
            ],
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


def _revisions_label(revisions: dict[str, int] | None) -> str:
    """One number when every output ran at the same revision, else each output's."""
    if not revisions:
        return "-"
    if len(set(revisions.values())) == 1:
        return str(next(iter(revisions.values())))
    return " · ".join(f"{name} {revision}" for name, revision in sorted(revisions.items()))


@app.command("history")
def history(
    source: Annotated[
        str | None, typer.Option("--source", help="Only the runs of this source label.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most this many runs, newest first.")
    ] = DEFAULT_HISTORY_LIMIT,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List backfill runs: source, trigger time, snapshot size, duration, outcome, dead jobs,
    and the revision of the code that triggered each."""
    if source is not None:
        source = _checked_source(source)
    with connected(database_url) as conn:
        runs = run_history(conn, source, limit=limit)
    if as_json:
        print_json({"runs": [run.as_dict() for run in runs]})
    elif runs:
        render_table(
            "Backfill runs (newest first)",
            [
                "job",
                "source",
                "triggered at",
                "users",
                "refreshed",
                "duration",
                "outcome",
                "dead",
                "revision",
            ],
            [
                (
                    run.job_id,
                    run.source,
                    run.created_at.isoformat(timespec="seconds"),
                    f"{run.users_total:,}",
                    f"{run.users_refreshed:,}",
                    format_duration(run.duration_seconds),
                    run.outcome,
                    f"{run.dead_jobs:,}",
                    _revisions_label(run.revisions),
                )
                for run in runs
            ],
        )
    else:
        console.print("no backfill runs yet", highlight=False)
    if source is not None and not runs:
        fail(f"no backfill was ever triggered for source {source!r}")


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


# --- preview: what the running code would change, before a deploy's backfill --------------


@contextmanager
def preview_bar(quiet: bool) -> Iterator[PreviewProgress]:
    """A progress bar with rate and ETA on stderr, fed (users done, users to do)."""
    columns = (
        TextColumn("[bold]preview"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("users"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, disable=quiet) as bar:
        task = bar.add_task("users", total=None)

        def show(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield show


def _examples(result: PreviewResult, change_class: str, limit: int = 2) -> str:
    return ", ".join(str(u) for u in result.tally.examples.get(change_class, [])[:limit])


def render_preview(result: PreviewResult) -> None:
    tally = result.tally
    revisions = ", ".join(f"{name} {rev}" for name, rev in result.running_revisions.items())
    console.print(
        f"previewed {tally.users_seen:,} of {result.users_total:,} users "
        f"({'every user' if result.scope == 'all' else 'random sample'}) in "
        f"{result.duration_seconds:.1f}s against the running code (revisions: {revisions}): "
        f"{tally.users_changed:,} would change",
        highlight=False,
        soft_wrap=True,
    )
    render_table(
        "Projections that would change",
        ["projection", "users compared", "would change", "would be created", "stored revisions"],
        [
            (
                f"{ptype}/{key}",
                f"{changes.users_compared:,}",
                f"{changes.users_changed:,}",
                f"{changes.users_missing:,}",
                " · ".join(f"{r}: {n:,}" for r, n in sorted(changes.stored_revisions.items()))
                or "-",
            )
            for (ptype, key), changes in tally.outputs.items()
        ],
    )
    field_rows = [
        (f"{ptype}/{key}", name, f"{users:,}", _examples(result, f"{ptype}/{key}.{name}"))
        for (ptype, key), changes in tally.outputs.items()
        for name, users in changes.fields.most_common()
    ]
    if field_rows:
        render_table(
            "Top-level fields that would change",
            ["projection", "field", "users", "e.g."],
            field_rows,
        )
    codes = sorted(set(tally.warnings_gained) | set(tally.warnings_lost))
    if codes:
        render_table(
            "Advisory warnings",
            ["code", "users gaining it", "users losing it", "e.g."],
            [
                (
                    code,
                    f"{tally.warnings_gained[code]:,}",
                    f"{tally.warnings_lost[code]:,}",
                    _examples(result, f"warning {code} gained")
                    or _examples(result, f"warning {code} lost"),
                )
                for code in codes
            ],
        )
    for title, counts, label in (
        ("Resolved modality: stored -> new", tally.modality, "modality"),
        (
            "Active objective source: stored -> new",
            tally.objective_source,
            "active objective source",
        ),
    ):
        moved = [(old, new, n) for (old, new), n in counts.most_common() if old != new]
        unchanged = sum(n for (old, new), n in counts.items() if old == new)
        render_table(
            title,
            ["stored", "new", "users", "e.g."],
            [
                (old, new, f"{n:,}", _examples(result, f"{label} {old} -> {new}"))
                for old, new, n in moved
            ]
            + [("(unchanged)", "", f"{unchanged:,}", "")],
        )
    if tally.users_changed:
        console.print(
            "look at an example: stride projections show <user id>; "
            "--json lists examples for every kind of change",
            highlight=False,
            soft_wrap=True,
        )


@app.command("preview")
def preview(
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            help=f"Preview this many random users (default {DEFAULT_SAMPLE}).",
            min=1,
            show_default=False,
        ),
    ] = None,
    all_users: Annotated[
        bool, typer.Option("--all", help="Preview every user (instead of a sample).")
    ] = False,
    max_rate: Annotated[
        float | None,
        typer.Option(
            "--max-rate",
            help="Recompute at most this many users per second (at least 1), for a busy database.",
            callback=finite_at_least(1, "users per second"),
        ),
    ] = None,
    examples: Annotated[
        int, typer.Option("--examples", help="Example user ids kept per kind of change.", min=0)
    ] = 3,
    no_save: Annotated[
        bool,
        typer.Option("--no-save", help="Do not keep the results in the database (read only)."),
    ] = False,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute users with the running code, without writing, and show what would change."""
    if all_users and sample is not None:
        usage_error("--sample and --all are mutually exclusive")
    with database_errors():
        target = database(database_url)
        with preview_bar(quiet=as_json) as show:
            result = preview_users(
                target.url,
                sample=None if all_users else (sample or DEFAULT_SAMPLE),
                max_rate=max_rate,
                examples=examples,
                on_progress=show,
            )
        saved_id = None
        if not no_save:
            with connect(target.url, autocommit=True) as conn:
                saved_id = save_preview(conn, result)
    if as_json:
        print_json(result.as_dict() | {"saved_id": saved_id})
    else:
        render_preview(result)
