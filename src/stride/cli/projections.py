"""`stride projections …`: read a user's projections, recompute them on demand."""

from __future__ import annotations

import json
from typing import Annotated
from uuid import UUID

import typer
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from stride.app import UnknownUsersError, refresh_projections_now
from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    console,
    fail,
    iso_time,
    print_json,
    say,
    typer_app,
    usage_error,
)
from stride.projections.registry import READ_MODELS, outputs_of
from stride.storage.projection_store import read_projections

app = typer_app("Read a user's projections, or recompute them now.")

# The projection types stored, by the read models that write them.
PROJECTION_TYPES = tuple(sorted({o.projection_type for o in outputs_of(READ_MODELS)}))


def _user_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        usage_error(f"USER must be a UUID, got {value!r}")


@app.command("show")
def show(
    user: Annotated[
        str, typer.Argument(metavar="USER", help="The user's id (UUID).", show_default=False)
    ],
    projection_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            metavar="TYPE",
            help=f"Only this projection type ({' or '.join(PROJECTION_TYPES)}).",
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pretty-print a user's projections (data, version, model version, update time)."""
    user_id = _user_id(user)
    if projection_type is not None and projection_type not in PROJECTION_TYPES:
        usage_error(
            f"--type: unknown projection type {projection_type!r} "
            f"(one of {', '.join(PROJECTION_TYPES)})"
        )
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
            f"updated {iso_time(p.updated_at)}"
        )
        console.print(
            Panel(body, title=Text(f"{p.projection_type}/{p.key}"), subtitle=Text(subtitle))
        )


@app.command("refresh")
def refresh(
    users: Annotated[
        list[str],
        typer.Argument(metavar="USER", help="Ids (UUIDs) of the users to recompute."),
    ],
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute these users' projections now, as a worker would (repairs what verify finds).

    Runs the projection.update handler's refresh for every projection, in one
    transaction, under the same per-user locks as the workers. An unknown user
    id refreshes nobody (exit 1).
    """
    user_ids = [_user_id(user) for user in users]
    with connected(database_url) as conn:
        try:
            outcome = refresh_projections_now(conn, user_ids)
        except UnknownUsersError as exc:
            fail(f"{exc}; nothing was refreshed")
    summary = outcome.summary
    if as_json:
        print_json(
            {
                "users": [str(u) for u in outcome.user_ids],
                "projections_written": summary.projections_written,
                "projections_superseded": summary.projections_superseded,
                "events_folded": summary.events_folded,
            }
        )
        return
    say(
        f"refreshed {summary.users:,} user{'s' if summary.users != 1 else ''}: "
        f"{summary.projections_written:,} projections written from "
        f"{summary.events_folded:,} events"
    )
    if summary.projections_superseded:
        say(
            f"{summary.projections_superseded:,} projections kept as stored: a higher revision "
            "than this code's wrote them (deploy the newer code, or roll logic back as a new "
            "revision)"
        )
