"""The `stride` command: sub-commands grouped by noun."""

from __future__ import annotations

import typer

from stride.cli import db

app = typer.Typer(
    help="stride keeps training-data projections correct: events, queue, backfill.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(db.app, name="db")

if __name__ == "__main__":
    app()
