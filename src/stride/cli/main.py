"""The `stride` command: sub-commands grouped by noun."""

from __future__ import annotations

import typer

from stride.cli import backfill, db, demo, events, jobs, projections, serve, tokens, users, worker
from stride.cli.common import OneLineUsageErrors

app = typer.Typer(
    help="stride keeps training-data projections correct: events, queue, backfill.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    cls=OneLineUsageErrors,
)
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(events.app, name="events")
app.add_typer(demo.app, name="demo")
app.add_typer(projections.app, name="projections")
app.add_typer(backfill.app, name="backfill")
app.add_typer(jobs.app, name="jobs")
app.add_typer(tokens.app, name="tokens")
app.command("worker")(worker.worker_command)
app.command("serve")(serve.serve_command)

if __name__ == "__main__":
    app()
