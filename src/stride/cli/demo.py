"""`stride demo …`: a synthetic population to demo, test and benchmark against."""

from __future__ import annotations

import time
from typing import Annotated

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
from stride.backfill.trigger import trigger_backfill
from stride.cli.backfill import print_report, wait_for_drain
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
from stride.queue.processes import running_workers
from stride.storage.connection import DbConnection, connect, data_dir
from stride.storage.migrations import migrate
from stride.storage.population import SeedSummary, seed_population

app = typer_app("Synthetic data for demos, tests and benchmarks.")


@app.command("seed")
def seed_command(
    users: Annotated[int, typer.Option("--users", min=1, help="How many users to create.")],
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same population.")] = 1,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load a deterministic population (~15% without events, ~80 events per user on average).

    It models pre-existing history: no projection jobs are queued (run the backfill
    to compute projections). Re-running with the same seed adds nothing.
    """
    with connected(database_url) as conn:
        summary = _seed_with_progress(conn, users, seed, quiet=as_json)
    if as_json:
        print_json(
            {
                "users": summary.users,
                "users_already_present": summary.users_already_present,
                "users_without_events": summary.users_without_events,
                "events": summary.events,
                "seconds": round(summary.seconds, 2),
                "events_per_second": round(summary.events_per_second),
                "already_seeded": summary.already_seeded,
            }
        )
        return
    _print_seed_summary(summary, users, seed)


def _seed_with_progress(conn: DbConnection, users: int, seed: int, quiet: bool) -> SeedSummary:
    with _progress(quiet) as progress:
        task = progress.add_task("seeding", total=users, events=0, rate=0.0)

        def advance(users_done: int, events: int) -> None:
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = events / elapsed if elapsed else 0.0
            progress.update(task, completed=users_done, events=events, rate=rate)

        return seed_population(conn, users, seed, progress=advance)


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
    users: Annotated[int, typer.Option("--users", min=1, help="Population size.")] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same population.")] = 1,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes to start.")
    ] = 2,
    source: Annotated[str, typer.Option("--source", help="The backfill's source label.")] = (
        "demo.objective_foundation"
    ),
    serve_api: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Then serve the HTTP API until Ctrl-C.")
    ] = True,
    port: Annotated[int, typer.Option("--port", help="The HTTP API's port.")] = 8000,
    database_url: DatabaseUrlOption = None,
) -> None:
    """The whole story: migrate, seed, backfill through real workers, verification reports,
    then the HTTP API with a curl line that reads a demo user's objective state."""
    log_path = data_dir().expanduser().resolve().parent / "demo-workers.log"
    with database_errors():
        target = database(database_url)
        with connect(target.url, autocommit=True) as conn:
            applied = migrate(conn)
            console.print(f"schema: {len(applied)} migration(s) applied", highlight=False)
            _print_seed_summary(_seed_with_progress(conn, users, seed, quiet=False), users, seed)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log, running_workers(target.url, workers, log=log):
            console.print(f"started {workers} worker processes (log: {log_path})", highlight=False)
            started = time.monotonic()
            with connect(target.url, autocommit=True) as conn:
                result = trigger_backfill(conn, source)
            console.print(result.describe(), highlight=False)
            if result.outcome == "no_users":
                return
            wait_for_drain(target.url, source, None, quiet=False)
            elapsed = time.monotonic() - started
        with connect(target.url, autocommit=True) as conn:
            progress = print_report(conn, source, as_json=False)
    if progress is not None:
        console.print(
            f"backfill of {progress.users_total:,} users took {elapsed:.1f}s "
            f"({progress.users_total / elapsed:,.0f} users/s)",
            highlight=False,
        )
    if progress is None or not progress.complete:
        raise typer.Exit(1)
    if serve_api:
        serve_demo(
            target.url,
            host="127.0.0.1",
            port=port,
            say=lambda line: console.print(line, highlight=False, soft_wrap=True),
        )


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
