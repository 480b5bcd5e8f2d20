"""The end of `make demo`: a token for a demo user, a curl line to try, then the server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from stride.api import service
from stride.api.config import ApiSettings
from stride.api.server import serve

DEMO_TOKEN_LIFETIME = timedelta(days=1)


def demo_curl(database_url: str, *, host: str, port: int) -> str | None:
    """Issue a one-day token for a user with an objective state; the curl line reading it."""
    with service.connect(database_url) as conn:
        user_id = service.sample_user_with_projection(conn, "objective_state", "active")
        if user_id is None:
            return None
        issued = service.issue_token(
            conn, user_id, operator=False, expires_at=datetime.now(UTC) + DEMO_TOKEN_LIFETIME
        )
    return (
        f"curl -s -H 'Authorization: Bearer {issued.text}' "
        f"http://{host}:{port}/v1/projections/objective_state/active"
    )


def serve_demo(
    database_url: str, *, host: str, port: int, say: Callable[[str], None] = print
) -> None:
    """Print how to read a demo user's objective state over HTTP, then serve until Ctrl-C."""
    line = demo_curl(database_url, host=host, port=port)
    if line is None:
        say("no user has an objective state yet: not starting the API")
        return
    say(f"HTTP API on http://{host}:{port} (docs: /docs); read a demo user's objective state:")
    say(f"  {line}")
    say("Ctrl-C stops the server.")
    serve(ApiSettings(database_url), host=host, port=port)
