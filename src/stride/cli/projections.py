"""`stride projections …`: read a user's projections."""

from __future__ import annotations

import json
from typing import Annotated
from uuid import UUID

import typer
from rich.panel import Panel
from rich.syntax import Syntax

from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    console,
    fail,
    print_json,
    typer_app,
    usage_error,
)
from stride.storage.projection_store import read_projections

app = typer_app("Read projections.")


@app.command("show")
def show(
    user: Annotated[str, typer.Argument(help="The user's id (UUID).", show_default=False)],
    projection_type: Annotated[
        str | None, typer.Option("--type", help="Only this projection type.")
    ] = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pretty-print a user's projections (data, version, model version, update time)."""
    try:
        user_id = UUID(user)
    except ValueError:
        usage_error(f"USER must be a UUID, got {user!r}")
    with connected(database_url) as conn:
        stored = read_projections(conn, user_id, projection_type)
    if not stored:
        fail(
            f"no projections for user {user_id}"
            + (f" of type {projection_type}" if projection_type else "")
        )
    if as_json:
        print_json(
            [
                {
                    "projection_type": p.projection_type,
                    "key": p.key,
                    "version": p.version,
                    "model_version": p.model_version,
                    "revision": p.revision,
                    "last_event_id": p.last_event_id,
                    "updated_at": p.updated_at,
                    "data": p.data,
                }
                for p in stored
            ]
        )
        return
    for p in stored:
        body = Syntax(json.dumps(p.data, indent=2, sort_keys=True), "json", word_wrap=True)
        subtitle = (
            f"version {p.version} · model {p.model_version} (revision {p.revision}) · "
            f"updated {p.updated_at:%Y-%m-%d %H:%M:%S%z}"
        )
        console.print(Panel(body, title=f"{p.projection_type}/{p.key}", subtitle=subtitle))
