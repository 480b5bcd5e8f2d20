"""`stride demo …`: a synthetic population to demo, test and benchmark against."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from stride.api.demo import serve_demo
from stride.backfill.reports import DrainProgress
from stride.backfill.trigger import TriggerResult
from stride.cli.backfill import drain_bar, render_status
from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    console,
    database,
    database_errors,
    err_console,
    print_json,
    typer_app,
)
from stride.demo.population import SeedProgress, SeedSummary, seed_population
from stride.demo.run import DemoResult, DemoSettings, fresh_demo_source, run_demo
from stride.storage.migrations import Migration

app = typer_app("Synthetic data for demos, tests and benchmarks.")


@app.command("seed")
def seed_command(
    users: Annotated[
        int, typer.Option("--users", metavar="N", min=1, help="How many users to create.")
    ],
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Same seed, same population.")
    ] = 1,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load a deterministic population (~15% without events, ~80 events per user on average).

    It models pre-existing history: no projection jobs are queued (run the backfill
    to compute projections). Re-running with the same seed adds nothing.
    """
    with connected(database_url) as conn, _seed_bar(users, quiet=as_json) as advance:
        summary = seed_population(conn, users, seed, progress=advance)
    if as_json:
        print_json(_seed_json(summary))
        return
    _print_seed_summary(summary, users, seed)


def _seed_json(summary: SeedSummary) -> dict[str, Any]:
    return {
        "users": summary.users,
        "users_already_present": summary.users_already_present,
        "users_without_events": summary.users_without_events,
        "events": summary.events,
        "seconds": round(summary.seconds, 2),
        "events_per_second": round(summary.events_per_second),
        "already_seeded": summary.already_seeded,
    }


@contextmanager
def _seed_bar(users: int, quiet: bool) -> Iterator[SeedProgress]:
    with _progress(quiet) as progress:
        task = progress.add_task("seeding", total=users, events=0, rate=0.0)

        def advance(users_done: int, events: int) -> None:
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = events / elapsed if elapsed else 0.0
            progress.update(task, completed=users_done, events=events, rate=rate)

        yield advance


def _print_seed_summary(summary: SeedSummary, users: int, seed: int) -> None:
    if summary.already_seeded:
        console.print(
            f"already seeded: all {users:,} users of seed {seed} exist; nothing written",
            highlight=False,
        )
        return
    present = (
        f" ({summary.users_already_present:,} already present, skipped)"
        if summary.users_already_present
        else ""
    )
    console.print(
        f"seeded {summary.users:,} users{present}, {summary.users_without_events:,} without "
        f"events; {summary.events:,} events in {summary.seconds:.1f}s "
        f"({summary.events_per_second:,.0f} events/s)",
        highlight=False,
        soft_wrap=True,
    )


@app.command("run")
def run_command(
    users: Annotated[
        int, typer.Option("--users", metavar="N", min=1, help="Population size.")
    ] = 5000,
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Same seed, same population.")
    ] = 1,
    workers: Annotated[
        int, typer.Option("--workers", metavar="N", min=1, help="Worker processes to start.")
    ] = 2,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            metavar="LABEL",
            help="The backfill's source label (default: a new demo.<UTC time> per run).",
        ),
    ] = None,
    serve_api: Annotated[
        bool | None,
        typer.Option(
            "--serve/--no-serve",
            help="Then serve the HTTP API until Ctrl-C (default: only in a terminal).",
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="The HTTP API's port.")
    ] = 8000,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the whole demo: migrate, seed, backfill through real workers, report, serve.

    Ends by serving the HTTP API with a curl line that reads a demo user's
    objective state: in a terminal by default, or wherever --serve says (so a
    script or CI running `make demo` finishes; --no-serve skips it). With --json,
    the result is one JSON document on stdout (and the curl line goes to stderr).
    """
    if serve_api is None:
        serve_api = sys.stdin.isatty() and sys.stdout.isatty()
    settings = DemoSettings(
        users=users, seed=seed, workers=workers, source=source or fresh_demo_source()
    )
    observer: _ConsoleObserver | _JsonObserver = (
        _JsonObserver() if as_json else _ConsoleObserver(settings)
    )
    with database_errors():
        url = database(database_url, quiet=as_json).url
        result = run_demo(url, settings, observer)
    if as_json:
        _print_demo_json(result, settings, observer)
    if result.status is None:
        return
    if not as_json:
        _print_demo_end(result)
    if not result.complete:
        raise typer.Exit(1)
    if not serve_api:
        if not as_json:
            console.print(
                "not serving the HTTP API (not a terminal): `stride serve` starts it",
                highlight=False,
            )
        return
    say = err_console.print if as_json else console.print
    serve_demo(
        url,
        host="127.0.0.1",
        port=port,
        say=lambda line: say(line, highlight=False, soft_wrap=True, markup=False),
    )


def _print_demo_end(result: DemoResult) -> None:
    assert result.status is not None
    render_status(result.status, as_json=False)
    run = result.status.run
    if run is not None:
        console.print(
            f"backfill of {run.users_total:,} users took {result.backfill_seconds:.1f}s "
            f"({run.users_total / result.backfill_seconds:,.0f} users/s)",
            highlight=False,
        )
    bin_dir = Path(sys.executable).parent
    if shutil.which("stride") is None and (bin_dir / "activate").exists():
        # `make demo` runs .venv/bin/stride: say how to type `stride` next.
        console.print(
            f"the stride command is in {bin_dir}, not on your PATH: "
            f"`source {bin_dir / 'activate'}` puts it there",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _print_demo_json(
    result: DemoResult, settings: DemoSettings, observer: _ConsoleObserver | _JsonObserver
) -> None:
    applied = observer.applied if isinstance(observer, _JsonObserver) else []
    demo = {
        "users": settings.users,
        "seed": settings.seed,
        "workers": settings.workers,
        "source": settings.source,
        "migrations_applied": applied,
        "seeded": _seed_json(result.seeded),
        "backfill_seconds": round(result.backfill_seconds, 3),
        "complete": result.complete,
    }
    trigger = {
        "outcome": result.trigger.outcome,
        "job_id": result.trigger.job_id,
        "users": result.trigger.users,
        "message": result.trigger.describe(),
    }
    if result.status is None:
        print_json({"demo": demo, "trigger": trigger})
    else:
        render_status(result.status, as_json=True, extra={"demo": demo, "trigger": trigger})


class _ConsoleObserver:
    """Draws `demo run`'s steps on the terminal (implements DemoObserver)."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings

    def migrated(self, applied: Sequence[Migration]) -> None:
        console.print(f"schema: {len(applied)} migration(s) applied", highlight=False)

    def seeding(self, users: int) -> AbstractContextManager[SeedProgress]:
        return _seed_bar(users, quiet=False)

    def seeded(self, summary: SeedSummary) -> None:
        _print_seed_summary(summary, self.settings.users, self.settings.seed)

    def workers_started(self, count: int, worker_log: Path) -> None:
        console.print(f"started {count} worker processes (log: {worker_log})", highlight=False)

    def triggered(self, result: TriggerResult) -> None:
        console.print(result.describe(), highlight=False)

    def draining(self) -> AbstractContextManager[DrainProgress]:
        return drain_bar(quiet=False)


class _JsonObserver:
    """`demo run --json`: draws nothing (stdout carries one JSON document), keeps the facts."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def migrated(self, applied: Sequence[Migration]) -> None:
        self.applied = [f"{m.version:04d}_{m.name}" for m in applied]

    def seeding(self, users: int) -> AbstractContextManager[SeedProgress]:
        return nullcontext(lambda _users, _events: None)

    def seeded(self, summary: SeedSummary) -> None:
        pass

    def workers_started(self, count: int, worker_log: Path) -> None:
        pass

    def triggered(self, result: TriggerResult) -> None:
        pass

    def draining(self) -> AbstractContextManager[DrainProgress]:
        return nullcontext(lambda _progress: None)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("users · {task.fields[events]:,} events · {task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=quiet or not err_console.is_terminal,
    )
