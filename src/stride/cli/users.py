"""`stride users …`: create and list users."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    console,
    fail,
    print_json,
    render_table,
    typer_app,
    usage_error,
)
from stride.storage.users import DuplicateUserError, add_user, list_users

app = typer_app("Create and list users.")


def parse_uuid(value: str, flag: str) -> UUID:
    """A UUID from a flag's value, or exit 2 naming the flag."""
    try:
        return UUID(value)
    except ValueError:
        usage_error(f"{flag}: not a UUID: {value!r}")


@app.command("add")
def add_command(
    user_id: Annotated[
        str | None,
        typer.Option(
            "--id", metavar="UUID", help="The user's id (default: a new time-ordered UUIDv7)."
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user and print its id."""
    requested = parse_uuid(user_id, "--id") if user_id is not None else None
    with connected(database_url) as conn:
        try:
            created = add_user(conn, requested)
        except DuplicateUserError as exc:
            fail(str(exc))
    if as_json:
        print_json({"id": str(created)})
    else:
        print(created)


@app.command("list")
def list_command(
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, help="How many users to show.")
    ] = 20,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the first users by id (UUID order), with their event counts.

    Id order is not creation order: ids that `users add` mints are UUIDv7,
    ordered by the millisecond they were minted; demo users' ids carry a
    synthetic time, in seeding order; ids given with `--id` sort by value.
    `created at` is the users.created_at column (synthetic for demo users).
    """
    with connected(database_url) as conn:
        users = list_users(conn, limit)
    if as_json:
        print_json(
            [
                {"id": str(u.id), "created_at": u.created_at.isoformat(), "events": u.event_count}
                for u in users
            ]
        )
        return
    if not users:
        console.print("no users yet: `stride users add` or `stride demo seed`")
        return
    render_table(
        "users",
        ["id", "created at", "events"],
        [(u.id, u.created_at, u.event_count) for u in users],
    )
