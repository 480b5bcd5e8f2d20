"""`stride tokens …`: issue, list and revoke API bearer tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import psycopg
import typer

from stride.api import service
from stride.api.config import parse_duration
from stride.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    connected,
    console,
    err_console,
    fail,
    iso_time,
    print_json,
    render_table,
    typer_app,
    usage_error,
)
from stride.cli.users import parse_uuid

app = typer_app("Issue, list and revoke bearer tokens for the HTTP API (`stride serve`).")


def _expiry(value: str, now: datetime) -> datetime | None:
    if value.strip().lower() == "never":
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        usage_error(f"--expires: {exc} (or never)")
    if seconds <= 0:
        usage_error("--expires: must be positive")
    try:
        return now + timedelta(seconds=seconds)
    except OverflowError:
        usage_error(f"--expires: {value!r} is too far in the future")


def _token_json(token: service.StoredToken, now: datetime) -> dict[str, object]:
    return {
        "id": token.id,
        "user_id": str(token.user_id),
        "operator": token.operator,
        "created_at": token.created_at.isoformat(),
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
        "state": token.state(now),
    }


@app.command("issue")
def issue_command(
    user: Annotated[
        str, typer.Option("--user", metavar="UUID", help="The user's id.", show_default=False)
    ],
    operator: Annotated[
        bool, typer.Option("--operator", help="May also call the /v1/admin endpoints.")
    ] = False,
    expires: Annotated[
        str,
        typer.Option("--expires", metavar="AGE", help="Lifetime, e.g. 90d, 12h; or never."),
    ] = "90d",
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a token and print it once (only a hash of it is stored)."""
    user_id = parse_uuid(user, "--user")
    now = datetime.now(UTC)
    expires_at = _expiry(expires, now)
    with connected(database_url) as conn:
        try:
            issued = service.issue_token(conn, user_id, operator=operator, expires_at=expires_at)
        except psycopg.errors.ForeignKeyViolation:
            fail(f"--user: no user {user_id}")
    if as_json:
        print_json({**_token_json(issued.stored, now), "token": issued.text})
        return
    print(issued.text)
    until = f"expires {iso_time(expires_at)}" if expires_at else "never expires"
    kind = "operator token" if operator else "token"
    err_console.print(
        f"{kind} {issued.stored.id} for user {user_id}, {until}; shown once: store it now",
        highlight=False,
    )


@app.command("list")
def list_command(database_url: DatabaseUrlOption = None, as_json: JsonOption = False) -> None:
    """Every token issued, with its state (active, expired, revoked); never the secret."""
    now = datetime.now(UTC)
    with connected(database_url) as conn:
        tokens = service.list_tokens(conn)
    if as_json:
        print_json([_token_json(t, now) for t in tokens])
        return
    if not tokens:
        console.print("no tokens issued")
        return
    render_table(
        "API tokens",
        ["id", "user", "operator", "created", "expires", "state"],
        [
            (
                t.id,
                t.user_id,
                "yes" if t.operator else "",
                t.created_at,
                t.expires_at or "never",
                t.state(now),
            )
            for t in tokens
        ],
    )


@app.command("revoke")
def revoke_command(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (tokens list).")],
    database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a token for good; running servers refuse it at once."""
    with connected(database_url) as conn:
        outcome = service.revoke_token(conn, token_id)
    if outcome == "unknown":
        fail(f"no token {token_id!r}")
    if as_json:
        print_json({"id": token_id, "revoked": True, "already_revoked": outcome == "already"})
    elif outcome == "already":
        console.print(f"token {token_id} was already revoked", highlight=False)
    else:
        console.print(f"revoked token {token_id}", highlight=False)
