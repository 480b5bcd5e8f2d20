"""`stride db …`: migrations and the embedded server."""

from __future__ import annotations

import os

import typer

from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    database,
    database_errors,
    err_console,
    fail,
    print_json,
    render_table,
    say,
    typer_app,
)
from stride.storage.connection import (
    DatabaseConfigError,
    data_dir,
    names_embedded_server,
    stop_embedded,
    validate_url,
)
from stride.storage.migrations import migrate, migration_status

app = typer_app("Schema migrations and the embedded PostgreSQL.")


@app.command("migrate")
def migrate_command(database_url: DatabaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Apply pending migrations (safe to run twice, and from several processes)."""
    with connected(database_url) as conn:
        applied = migrate(conn)
    names = [f"{m.version:04d}_{m.name}" for m in applied]
    if as_json:
        print_json({"applied": names})
    elif names:
        for name in names:
            say(f"applied {name}")
    else:
        say("schema is up to date")


@app.command("status")
def status_command(database_url: DatabaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Show applied and pending migrations; exit 1 while any is pending."""
    with connected(database_url) as conn:
        status = migration_status(conn)
    pending = [s for s in status if s.applied_at is None]
    if as_json:
        print_json(
            [
                {
                    "version": s.version,
                    "name": s.name,
                    "applied_at": s.applied_at,
                    "state": "applied" if s.applied_at else "pending",
                }
                for s in status
            ]
        )
    else:
        render_table(
            "migrations",
            ["version", "name", "state", "applied at"],
            [
                (
                    f"{s.version:04d}",
                    s.name,
                    "applied" if s.applied_at else "pending",
                    s.applied_at,
                )
                for s in status
            ],
        )
    if pending:
        err_console.print(
            f"{len(pending)} migration{'s' if len(pending) != 1 else ''} pending: "
            "run `stride db migrate`",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)


@app.command("url")
def url_command(database_url: DatabaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Print the database URL stride would use (starting the embedded server if needed)."""
    with database_errors():
        target = database(database_url, quiet=True)
    if as_json:
        print_json({"url": target.url, "origin": target.origin})
    else:
        print(target.url)


@app.command("stop")
def stop_command(database_url: DatabaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Stop the embedded PostgreSQL that stride started (never a server of your own).

    With --database-url (or $DATABASE_URL), the URL must name that embedded
    server; any other server is refused (exit 1) and left running.
    """
    where = data_dir()
    url = database_url if database_url is not None else os.environ.get("DATABASE_URL") or None
    if url is not None:
        flag = "--database-url" if database_url is not None else "$DATABASE_URL"
        try:
            validate_url(url, flag=flag)
        except DatabaseConfigError as exc:
            fail(str(exc), code=2 if exc.is_usage_error else 1)
        if not names_embedded_server(url, where):
            fail(
                f"{flag} names a server stride did not start: `stride db stop` only stops "
                f"the embedded PostgreSQL in {where}; stop yours with its own tools"
            )
    stopped = stop_embedded(where)
    if as_json:
        print_json({"stopped": stopped, "data_dir": str(where)})
    elif stopped:
        say(f"stopped the embedded PostgreSQL in {where}")
    else:
        say(f"no embedded PostgreSQL is running in {where}")
