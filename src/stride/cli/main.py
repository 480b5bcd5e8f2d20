"""The `stride` command: sub-commands grouped by noun."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from stride.cli import (
    backfill,
    db,
    demo,
    events,
    jobs,
    projections,
    serve,
    tokens,
    users,
    worker,
    workers,
)
from stride.cli.common import OneLineUsageErrors

app = typer.Typer(
    help="stride keeps training-data projections correct: events, queue, backfill.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    cls=OneLineUsageErrors,
    # -h works wherever --help does: sub-commands inherit the root's help options.
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(asked: bool) -> None:
    if asked:
        try:
            installed = version("stride")
        except PackageNotFoundError:  # run from a source tree that was never installed
            installed = "unknown (not installed)"
        print(f"stride {installed}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print stride's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """stride keeps training-data projections correct: events, queue, backfill."""


app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(events.app, name="events")
app.add_typer(demo.app, name="demo")
app.add_typer(projections.app, name="projections")
app.add_typer(backfill.app, name="backfill")
app.add_typer(jobs.app, name="jobs")
app.add_typer(tokens.app, name="tokens")
app.command("worker")(worker.worker_command)
app.command("workers")(workers.workers_command)
app.command("serve")(serve.serve_command)

if __name__ == "__main__":
    app()
