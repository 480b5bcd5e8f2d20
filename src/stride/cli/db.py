"""`stride db …`: migrations and the embedded server."""

from __future__ import annotations

from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    console,
    database,
    database_errors,
    print_json,
    render_table,
    typer_app,
)
from stride.storage.connection import data_dir, stop_embedded
from stride.storage.migrations import migrate, migration_status

app = typer_app("Schema migrations and the embedded PostgreSQL.")


@app.command("migrate")
def migrate_command(database_url: DatabaseUrlOption = None) -> None:
    """Apply pending migrations (safe to run twice, and from several processes)."""
    with connected(database_url) as conn:
        applied = migrate(conn)
    if applied:
        for migration in applied:
            console.print(f"applied {migration.version:04d}_{migration.name}")
    else:
        console.print("schema is up to date")


@app.command("status")
def status_command(database_url: DatabaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Show applied and pending migrations."""
    with connected(database_url) as conn:
        status = migration_status(conn)
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
        return
    render_table(
        "migrations",
        ["version", "name", "state", "applied at"],
        [
            (f"{s.version:04d}", s.name, "applied" if s.applied_at else "pending", s.applied_at)
            for s in status
        ],
    )


@app.command("url")
def url_command(database_url: DatabaseUrlOption = None) -> None:
    """Print the database URL stride would use (starting the embedded server if needed)."""
    with database_errors():
        print(database(database_url, quiet=True).url)


@app.command("stop")
def stop_command() -> None:
    """Stop the embedded PostgreSQL (a server given by URL is never touched)."""
    if stop_embedded():
        console.print(f"stopped the embedded PostgreSQL in {data_dir()}")
    else:
        console.print(f"no embedded PostgreSQL is running in {data_dir()}")
