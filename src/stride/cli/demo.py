"""`stride demo …`: a synthetic population to demo, test and benchmark against."""

from __future__ import annotations

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

from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    console,
    database,
    database_errors,
    err_console,
    print_json,
    typer_app,
)
from stride.storage.connection import connect
from stride.storage.population import seed_population

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
    with database_errors():
        target = database(database_url)
        with connect(target.url, autocommit=True) as conn, _progress(as_json) as progress:
            task = progress.add_task("seeding", total=users, events=0, rate=0.0)

            def advance(users_done: int, events: int) -> None:
                elapsed = progress.tasks[task].elapsed or 0.0
                rate = events / elapsed if elapsed else 0.0
                progress.update(task, completed=users_done, events=events, rate=rate)

            summary = seed_population(conn, users, seed, progress=advance)
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
